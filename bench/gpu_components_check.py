"""GPU check (not a benchmark): the "components" part kept on the GPU gives the same answers as
one copied to the host, on tiny random models of five families and of the families that run
their own blocks (Falcon, BLOOM, MPT, GPT-J).

    python bench/gpu_components_check.py        # exits 1 on any failure

For each family: capture with components_on_device=True and False; the first must stay on the
GPU; the analyses run there: the parts add up to the next residual (fp32, 1e-4), direct logit
attribution adds up to the logit (1e-3) and equals the host record's, routes keep the same edges
with the same importances (1e-4; an edge within 1e-3 of the threshold may fall either side);
both records agree, and a capture file round-trips (moving the components to the host). CI has no GPU; run it through bench/gpu_suite.sh.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analyse.attribution import attention_bias, direct_logit_attribution, head_outputs
from explorer.analyse.routes import attention_rows_from_store, build_routes
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.record.capture_file import open_capture, save_capture
from tests.record.test_all_architectures import CONFIGS, build
from tests.tiny_models import tiny_model, with_random_biases

THRESHOLD = 0.02


def check(family: str) -> list[str]:
    problems: list[str] = []
    cuda = torch.cuda.is_available()                          # without one: a smoke run of the rest
    own_blocks = family in CONFIGS                            # BLOOM, Falcon, ...: no attention interface
    model = (build(family) if own_blocks else with_random_biases(tiny_model(family))).to("cuda" if cuda else "cpu")
    ids = torch.randint(3, 250, (33,), generator=torch.Generator().manual_seed(2))
    dev = capture(model, None, ids, CaptureOptions(parts=PARTS, components_on_device=True))
    host = capture(model, None, ids, CaptureOptions(parts=PARTS, components_on_device=False))
    comp, ref = dev.components, host.components
    if comp is None or ref is None:
        return [f"no components: {dev.notes} {host.notes}"]
    if cuda and not comp.on_device:
        problems.append("components_on_device=True left them on the host")
    if ref.on_device:
        problems.append("components_on_device=False kept them on the GPU")
    att, att_ref = direct_logit_attribution(comp, -1), direct_logit_attribution(ref, -1)
    if abs(att.total() - att.logit) > 1e-3:
        problems.append(f"attribution misses the logit by {abs(att.total() - att.logit):.2e}")
    if not torch.allclose(att.heads, att_ref.heads, atol=1e-4) or att.heads.device.type != "cpu":
        problems.append("attribution on the GPU differs from the host record's (or is not on the CPU)")
    if not own_blocks:
        rows = attention_rows_from_store(dev.attention)
        edges = lambda c: {(e.source, e.target, e.kind): e.importance  # noqa: E731
                           for e in build_routes(c, rows, -1, THRESHOLD).edges}
        on_gpu, on_host = edges(comp), edges(ref)
        # rounding differs between the devices: an edge may cross the threshold only when it is at it
        for key in on_gpu.keys() ^ on_host.keys():
            value = on_gpu.get(key, on_host.get(key))
            if abs(value - THRESHOLD) > 1e-3:
                problems.append(f"routes: edge {key} ({value:.4f}) only on the {'GPU' if key in on_gpu else 'host'}")
        worst = max((abs(on_gpu[k] - on_host[k]) for k in on_gpu.keys() & on_host.keys()), default=0.0)
        if worst > 1e-4:
            problems.append(f"routes: edge importances differ by up to {worst:.2e}")
    for layer in range(comp.num_layers):
        parts = (comp.resid[layer].float() + head_outputs(comp, layer).sum(0) + attention_bias(comp, layer)
                 + comp.mlp[layer].float())
        err = float((parts - comp.resid[layer + 1].float()).abs().max())
        if err > 1e-4:
            problems.append(f"layer {layer}: parts miss the next residual by {err:.2e}")
    for name in ("resid", "z", "mlp", "values"):
        a, b = getattr(comp, name), getattr(ref, name)
        if (a is None) != (b is None) or (a is not None and not torch.allclose(a.cpu(), b, atol=1e-5)):
            problems.append(f"{name} differs between the device and the host record")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.safetensors"
        save_capture(dev, path)
        back = open_capture(path).components
        if comp.on_device or back is None or not torch.equal(back.z, comp.z):
            problems.append("capture file lost the components")
    return problems


def main() -> int:
    failed = 0
    for family in ("llama", "qwen2", "phi3", "gemma2", "gpt2", *CONFIGS):
        try:
            problems = check(family)
        except Exception as exc:  # noqa: BLE001 - report every family
            import traceback
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)[::-1][:6])
            problems = [f"{type(exc).__name__}: {exc} at {where}"]
        failed += bool(problems)
        print(f"{family}: {'PASS' if not problems else 'FAIL ' + '; '.join(problems)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
