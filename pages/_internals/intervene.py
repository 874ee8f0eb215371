"""The Internals page's Intervene view: turn heads (or neurons, blocks) off and see the answer
change beside the plain run; generate with them; activation patching between two prompts.

Thin: specs are explorer.record.interventions, the forwards explorer.analyse.{intervention_effects,
patching}, the figures explorer.views.figures.patching. Every forward here is one model-worker
request (never batched with another session's: the hooks act on every row while they are on);
generating with row-local interventions decodes as rows of the worker's shared batch instead
(pages/_chat_ablation.answers_with, explorer/record/row_interventions.py).
The interventions are kept in the URL as `iv=h14.2,h20.5` once the reader edits or runs them, or
adds a head with "Ablate this head" (attribution and routes views); the chat panel then offers to
answer again with them (pages/_chat_ablation.py). A capture taken under interventions keeps them
as `ivcap=`, and its link captures the prompt under them again.
"""
from __future__ import annotations

import streamlit as st
import torch

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.intervention_effects import direct_and_indirect, forward_effect
from explorer.analyse.patching import patch_heads, patch_residual, prepare
from explorer.model.errors import user_message
from explorer.model.generation import GenerateOptions, conversation
from explorer.record.intervention_hooks import capture_under, validate
from explorer.record.interventions import BadIntervention, HeadAblation, interventions_of, parse, to_short
from explorer.record.token_text import token_text
from explorer.views.figures.patching import head_patching_heatmap, probability_bars, residual_patching_heatmap
from explorer.views.intervene_data import effect_rows, head_label, heads_from_labels, ranked_heads, split_rows, with_head
from explorer.views.readout import Readout
from explorer.views.teaching import escape_markdown
from explorer.views.text import visible_whitespace
from explorer.views.units import table_cells
from pages._chat_ablation import answers_with, set_active
from pages._common import model_worker, queue_note, run_on_model, session_alive, session_id, worker_runner
from pages._internals.drawing import Shown
from pages._internals.on_screen import OnScreen, capture_options, on_screen, set_on_screen
from pages._state import INTERNALS as K
from pages._state import VIEW

HEADS, MORE, EFFECT, GENERATED, PATCHED = (K + "iv_heads", K + "iv_more", K + "iv_effect", K + "iv_generated",
                                           K + "iv_patched")
URL_PARAM = "iv"
AUTORUN, APP_RERUN = K + "iv_autorun", K + "iv_app_rerun"
CAPTURE_PARAM = "ivcap"   # the interventions the capture on screen was taken under (`iv` is the view's choice)


def keep_capture_interventions(cap) -> None:
    """The URL's `ivcap=`, from the capture's own notes (one rule: the capture says what it ran with)."""
    short = to_short(interventions_of(cap.notes))
    if short and st.query_params.get(CAPTURE_PARAM) != short:
        st.query_params[CAPTURE_PARAM] = short
    elif not short and CAPTURE_PARAM in st.query_params:
        del st.query_params[CAPTURE_PARAM]


def linked_capture_interventions() -> list:
    """A shared link's `ivcap=`: its prompt is captured under them again ([] for a plain capture)."""
    try:
        return parse(st.query_params.get(CAPTURE_PARAM, ""))
    except BadIntervention as exc:
        st.warning(f"The link's capture interventions were ignored: {exc}")
        return []


def _keep(specs) -> None:
    """The interventions the reader chose (edited, run, or "ablate this head"): kept in the URL and
    offered to the chat panel ("Answer again with … off"). The chat panel is drawn outside the
    views fragment, so a change asks for one full rerun (APP_RERUN) to show it there."""
    short = to_short(specs)
    if short:
        st.query_params[URL_PARAM] = short
    elif URL_PARAM in st.query_params:
        del st.query_params[URL_PARAM]
    if set_active(list(specs)):
        st.session_state[APP_RERUN] = True


def _edited() -> None:
    """on_change of the heads and the text: valid edits are kept (a bad one waits for its message)."""
    try:
        _keep(heads_from_labels(st.session_state.get(HEADS) or []) + parse(st.session_state.get(MORE, "")))
    except BadIntervention:
        pass


def ablate_head(layer: int, head: int) -> None:
    """"Ablate this head" (a button callback in the attribution and routes views): the head joins
    the interventions kept in the URL, and the Intervene view opens and runs them."""
    try:
        specs = parse(st.query_params.get(URL_PARAM, ""))
    except BadIntervention:
        specs = []
    _keep(with_head(specs, layer, head))
    st.session_state.pop(K + "iv_for", None)          # _initial_heads reads them from the URL again
    st.session_state[VIEW] = "intervene"
    st.session_state[AUTORUN] = True


def _initial_heads(r: Readout, token: int) -> None:
    """From the link's `iv=` first, else the heads the attribution ranks first (once per capture)."""
    key = (id(r.capture), token)
    if st.session_state.get(K + "iv_for") == key:
        return
    st.session_state[K + "iv_for"] = key
    cap = r.capture
    labels: list[str] = []
    try:
        linked = parse(st.query_params.get(URL_PARAM, ""))
    except BadIntervention as exc:
        st.warning(f"The link's interventions were ignored: {exc}")
        linked = []
    if linked:
        labels = [head_label(s.layer, s.head) for s in linked if isinstance(s, HeadAblation) and s.mode == "zero"]
        st.session_state[MORE] = to_short([s for s in linked if not (isinstance(s, HeadAblation) and s.mode == "zero")])
    elif cap.components is not None:
        att = r._cached(("attribution", token), lambda: direct_logit_attribution(cap.components, token))
        labels = ranked_heads(att)
    options = {head_label(l, h) for l in range(cap.num_layers) for h in range(cap.num_heads)}
    st.session_state[HEADS] = [x for x in labels if x in options]


def intervene_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    cap = r.capture
    model = r.model_ref.model
    if model is None:
        st.info("Interventions run the model: load the model this capture came from, and capture the prompt again.")
        return
    _initial_heads(r, token)
    st.caption(f"Explaining the prediction after token **{token}**: pick another token above.")
    c1, c2 = st.columns([3, 2])
    labels = c1.multiselect("Heads to turn off (layer.head)", [head_label(l, h) for l in range(cap.num_layers)
                                                               for h in range(cap.num_heads)], key=HEADS,
                            on_change=_edited,
                            help="Pre-filled with the heads the attribution ranks first for this prediction.")
    more = c2.text_input("More interventions", key=MORE, on_change=_edited, placeholder="h3.1x0.5, mean:h4.2, n5.120, skip:mlp7",
                         help="Short forms: h14.2 (off), h14.2x0.5 (scaled), mean:h3.1 (prompt mean), n5.120 "
                              "(an MLP neuron), skip:attn5 / skip:mlp7 (a whole block).")
    try:
        specs = heads_from_labels(labels) + parse(more)
        validate(model, specs, length=token + 1)
    except BadIntervention as exc:
        st.error(str(exc))
        return
    ids = cap.token_ids[: token + 1]
    b1, b2, b3 = st.columns(3)
    run = b1.button("Run with these interventions", key=K + "iv_run", disabled=not specs, type="primary")
    if (run or st.session_state.pop(AUTORUN, False)) and specs:
        _keep(specs)
        try:
            st.session_state[EFFECT] = (to_short(specs), token,
                                        run_on_model(lambda m: forward_effect(m.model, ids, specs)))
        except Exception as exc:  # noqa: BLE001 - a message in the page; the model stays usable
            st.error(user_message(exc))
    if b2.button("Generate with these interventions", key=K + "iv_gen", disabled=not specs):
        _keep(specs)
        _generate(specs)
    b3.button("Capture under these interventions", key=K + "iv_capture", disabled=not specs, on_click=_capture,
              args=(tuple(specs),), help="A new capture of this prompt with them applied; its notes, its file and "
                                         "its link say which.")
    done = st.session_state.get(EFFECT)
    if done and done[:2] == (to_short(specs), token):
        _show_effect(r, done[2], specs, token, shown)
    generated = st.session_state.get(GENERATED)
    if generated and generated[0] == to_short(specs):
        g1, g2 = st.columns(2)
        g1.markdown("**Plain answer**")
        g1.text(generated[1])
        g2.markdown(f"**With {escape_markdown(generated[0])}**")
        g2.text(generated[2])
    with st.expander("Activation patching: which layer, position and head carry the answer?",
                     expanded=bool(st.session_state.get(PATCHED) or st.session_state.get(K + "iv_corrupt"))):
        _patching_panel(r, shown)
    if st.session_state.pop(APP_RERUN, False):
        st.rerun()                   # the whole page: the chat panel offers the interventions now kept


def _show_effect(r: Readout, effect, specs, token: int, shown: Shown) -> None:
    raw = r.model_ref.decode() or (lambda i: f"id {i}")

    def decode(i: int) -> str:           # "↵" and "␣" for a newline or a space token, never a blank label
        return visible_whitespace(raw(i))
    answer = decode(effect.target)
    m1, m2, m3 = st.columns(3)
    m1.metric(f"P(“{answer}”) plain", f"{effect.prob_before:.1%}")
    m2.metric(f"P(“{answer}”) with interventions", f"{effect.prob_after:.1%}",
              delta=f"{(effect.prob_after - effect.prob_before) * 100:+.1f} points")
    m3.metric("KL(plain ‖ with)", f"{effect.kl:.3f} nats", help="How far the whole next-token distribution moved.")
    shown.figure("iv_bars", lambda: probability_bars([(decode(i), p) for i, p in effect.top_before[:8]],
                                                     [(decode(i), p) for i, p in effect.top_after[:8]]),
                 key=(effect.interventions, token))
    st.dataframe(table_cells(effect_rows(effect, decode)), hide_index=True, key=K + "iv_rows")
    cap = r.capture
    if interventions_of(cap.notes):
        st.caption("The direct and indirect split needs the plain run's attribution: this capture was taken with "
                   "interventions. Capture the prompt again without them to see it.")
    elif cap.components is not None and effect.target == int(cap.components.predicted[token]):
        att = r._cached(("attribution", token), lambda: direct_logit_attribution(cap.components, token))
        split = direct_and_indirect(effect, att.heads, specs)
        if split is not None:
            st.markdown("**Total, direct and indirect effect** on the answer's logit. The direct part is what the "
                        "heads' attribution says they wrote into it; the rest is the indirect effect, through "
                        "later layers that read what these heads wrote.")
            st.dataframe(split_rows(split), hide_index=True, key=K + "iv_split")


def _generate(specs) -> None:
    cur = on_screen()
    if cur is None or not cur.display_text:
        st.info("Generation needs the capture's prompt (a capture opened from a file has none).")
        return
    messages = conversation(cur.display_text) if cur.source != "raw" else [{"role": "user", "content": cur.display_text}]
    try:
        with st.spinner("Generating the plain answer and the one with interventions…"):
            pair = answers_with(messages, specs, GenerateOptions(max_new_tokens=48), plain_too=True)
        st.session_state[GENERATED] = (to_short(specs), pair.plain.text, pair.changed.text)
    except Exception as exc:  # noqa: BLE001 - a message in the page; the model stays usable
        st.error(user_message(exc))


def _capture(specs) -> None:
    """A button callback: it runs before the page draws, so the new capture may reset the layer,
    head and token controls (set_on_screen) before they exist."""
    cur = on_screen()
    if cur is None:
        return
    ids = cur.readout.capture.token_ids
    _keep(specs)

    runner = worker_runner()        # made on the page's thread: its session and heartbeat

    def run(m):
        cap = capture_under(m.model, m.tokenizer, ids, capture_options(m.name, m.precision), specs)
        return OnScreen(Readout(cap, m.model, m.tokenizer, run=runner), cur.display_text, cur.source,
                       f"{cur.origin} with {to_short(specs)}", cur.answer_start)
    try:
        set_on_screen(run_on_model(lambda m: run(m)))
    except Exception as exc:  # noqa: BLE001 - a message in the page; the capture shown stays
        st.error(user_message(exc))


def _patching_panel(r: Readout, shown: Shown) -> None:
    cur = on_screen()
    clean = st.text_input("Clean prompt", value=(cur.display_text or "") if cur else "", key=K + "iv_clean")
    corrupt = st.text_input("Corrupted prompt (same number of tokens)", key=K + "iv_corrupt")
    c1, c2, c3 = st.columns(3)
    answer = c1.text_input("Answer token (empty: clean run's top)", key=K + "iv_answer")
    foil = c2.text_input("Second token (empty: corrupted run's top)", key=K + "iv_foil")
    sites = c3.radio("Patch", ["residual stream", "heads", "both"], key=K + "iv_sites", horizontal=True)
    go_col, cancel_col = st.columns([1, 1])
    if cancel_col.button("Cancel", key=K + "iv_cancel"):
        st.info("Patching cancelled.")       # the click's rerun stopped the wait, which cancelled the request
    if go_col.button("Run patching", key=K + "iv_patch"):
        if clean and corrupt:
            _run_patching(r, clean, corrupt, answer, foil, sites)
        else:
            st.info("Type both prompts: the clean one and a corrupted one with the same number of tokens.")
    done = st.session_state.get(PATCHED)
    if done:
        texts, answer_text, foil_text, results = done
        for res in results:
            st.caption(f"{res.seconds:.1f} s · logit difference clean {res.clean_diff:+.2f}, corrupted "
                       f"{res.corrupt_diff:+.2f}" + "".join(f" · {escape_markdown(n)}" for n in res.notes))
            build = (lambda res=res: residual_patching_heatmap(res.scores, texts, answer_text, foil_text)) \
                if res.site == "resid" else (lambda res=res: head_patching_heatmap(res.scores, answer_text, foil_text))
            shown.figure("patch_" + res.site, build, key=(id(res),))


def _one_token(tok, text: str) -> int | None:
    if not text:
        return None
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise BadIntervention(f"“{text[:30]}” is {len(ids)} tokens; give the text of one token (often with its "
                              "leading space).")
    return int(ids[0])


def _run_patching(r: Readout, clean: str, corrupt: str, answer: str, foil: str, sites: str) -> None:
    bar = st.progress(0.0, text="Patching…")

    class Sink:
        def __call__(self, message: str) -> None:
            bar.progress(0.0, text=message)

        def fraction(self, phase: str, done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"{phase}: {done} of {total} patches")

    def run(loaded, req):
        tok, model = loaded.tokenizer, loaded.model
        setup = prepare(model, torch.tensor(tok(clean)["input_ids"]), torch.tensor(tok(corrupt)["input_ids"]),
                        _one_token(tok, answer), _one_token(tok, foil))
        out = []
        for site in (["resid", "head"] if sites == "both" else ["resid" if sites.startswith("res") else "head"]):
            fn = patch_residual if site == "resid" else patch_heads
            out.append(fn(model, setup, progress=lambda d, n, s=site: req.fraction(s, d, n), cancel=req.cancel_event))
        texts = [token_text(tok, i) for i in setup.clean.tolist()]
        return texts, token_text(tok, setup.answer), token_text(tok, setup.foil), out

    note = st.empty()
    try:
        st.session_state[PATCHED] = model_worker().submit(run, session_id()).wait(
            progress=Sink(), alive=session_alive(), on_wait=lambda n: note.caption(queue_note(n)) if n else None)
        bar.progress(1.0, text="Done")
    except Exception as exc:  # noqa: BLE001 - cancelled, bad prompts or a worker error: a message, the model stays usable
        bar.empty()
        st.error(user_message(exc))
    finally:
        note.empty()
