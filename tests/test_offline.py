"""The dashboard's own settings keep it off the internet (issue 19, item 6), without a browser.

tests/test_e2e_browser.py checks the real thing (no request leaves 127.0.0.1 on any page), but
its server is started with --browser.gatherUsageStats false; `roilab dashboard` relies on the
repository's .streamlit/config.toml instead (it runs Streamlit from the repository root).
"""
from __future__ import annotations

import ast
import tomllib

from app.nav import FAVICON
from engine.core.settings import REPO_ROOT

CONFIG = REPO_ROOT / ".streamlit" / "config.toml"
MAIN = REPO_ROOT / "app" / "main.py"


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_streamlit_config_sends_no_usage_stats_and_names_no_url():
    config = tomllib.loads(CONFIG.read_text())
    assert config["browser"]["gatherUsageStats"] is False  # else the page posts metrics
    # a theme font or image given as a URL would be fetched by every page
    assert not [s for s in _strings(config) if "://" in s]


def test_page_icon_is_a_file_in_the_repository():
    """A ":material/...:" page_icon is loaded from fonts.gstatic.com by Streamlit's frontend."""
    tree = ast.parse(MAIN.read_text())
    [call] = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "attr", None) == "set_page_config"]
    icon = next(k.value for k in call.keywords if k.arg == "page_icon")
    assert ast.unparse(icon) == "nav.FAVICON", \
        f"page_icon={ast.unparse(icon)}: give an image file (app/static/), not an icon name"
    assert FAVICON.is_file() and FAVICON.is_relative_to(REPO_ROOT)
    svg = FAVICON.read_text()  # sent inline as a data: URL; nothing in it may point outside
    assert svg.lstrip().startswith("<svg") and "href" not in svg and "url(" not in svg
