"""Start `streamlit run app.py` with every page routed through app.py from the first request.

Streamlit treats a folder named pages/ as its legacy multipage mode until the entry script has
called st.navigation once in the process; until then a first request straight to /internals
would run that page alone, without app.py's navigation and page config. Deciding it before the
server starts makes deep links (shared URLs) work on a fresh server.

    python scripts/serve.py [streamlit run options...]
"""
import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

if __name__ == "__main__":
    PagesManager.uses_pages_directory = False
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    sys.argv = ["streamlit", "run", app, *sys.argv[1:]]
    sys.exit(cli.main())
