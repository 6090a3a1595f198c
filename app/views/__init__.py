"""Dashboard pages: each module exposes ``render()``, registered in ``app.nav``."""
