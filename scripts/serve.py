"""Start `streamlit run app.py` with every page routed through app.py from the first request.

    python scripts/serve.py [streamlit run options...]
"""
import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli


def route_every_request_through_app() -> None:
    """The one place that turns Streamlit's legacy pages/ mode off (nothing else may).

    Why: a folder named pages/ next to the entry script makes Streamlit serve each file in it as a
    page of its own until app.py has called st.navigation once in the process. Until then a first
    request straight to a shared link (/internals?layer=3) would run that page alone: no
    navigation, no page config. Deciding it before the server starts makes deep links work on a
    fresh server. It is a class attribute of a Streamlit internal, so an upgrade may move it:
    tests/browser/test_deep_link_browser.py opens a deep link as a fresh server's first request.
    """
    PagesManager.uses_pages_directory = False


if __name__ == "__main__":
    route_every_request_through_app()
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    sys.argv = ["streamlit", "run", app, *sys.argv[1:]]
    sys.exit(cli.main())
