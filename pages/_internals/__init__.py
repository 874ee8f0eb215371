"""The internals page's parts, one module per job (a package whose name starts with "_", so that
Streamlit's legacy pages/ mode never lists it as a page).

  on_screen         OnScreen (the capture on screen) and run_capture, the one place the model's forward runs
  link              a shared link: read once, its prompt captured when the right model is loaded
  capture_controls  follow the chat (forgotten when it is cleared), a typed prompt, or a text file
  controls          layer, head and token pickers (sticky) and the token strip, paged for long prompts
  settings          sidebar: memory budget, open a capture file
  fragment          the views fragment: caption, controls, the chosen view, downloads, URL
  drawing           Shown (figures/tables drawn this run), explanations, click callbacks
  attention, residual, embeddings, lens, tour   one module per view
  share             downloads and the shareable URL

State per session lives in st.session_state under the names in pages/_state.py. The model's forward
runs only in `run_capture`; everything inside the fragment reads the memoised Readout, which computes
what it has not yet (lens, summaries, attribution, a file's lens) on the model worker.
"""
from pages._internals.capture_controls import capture_controls
from pages._internals.fragment import views_fragment
from pages._internals.link import restore_link
from pages._internals.settings import open_error_banner, settings_sidebar

__all__ = ["capture_controls", "open_error_banner", "restore_link", "settings_sidebar", "views_fragment"]
