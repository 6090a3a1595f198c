"""roilab engine: replay request logs through a baseline and compressed variants.

The engine never imports streamlit; the app and CLI call into it and inject progress.
"""
__version__ = "0.1.0"
