"""roilab dashboard (Streamlit). Pages draw; ``app.data`` reads and writes; ``engine`` computes."""
