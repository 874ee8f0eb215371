"""Why streaming is slower on the GPU: plain generate vs generate in a worker thread vs TextIteratorStreamer.

Investigation script (not a test), run on the device machine: python bench/gpu_stream_check.py CHECKPOINT_DIR
Measured on an H100 (bf16, random Llama-3.1-8B architecture, 96 new tokens): raw 33-35 tok/s, the same call in a
worker thread 13-15 tok/s, with the streamer 9-12 tok/s, whatever the GIL switch interval. Cause not found yet.
"""
import sys
import threading
import time

import torch

sys.path.insert(0, ".")
from transformers import StoppingCriteriaList, TextIteratorStreamer

from explorer.model.loading import LoadConfig, load_model


class _StopOnEvent:  # the stopping criterion generate() used before the decode core (explorer/model/decode_batch.py)
    def __init__(self, event): self.event = event
    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


lm = load_model(LoadConfig(source=sys.argv[1], precision="bf16"))
tok, m = lm.tokenizer, lm.model
ids = torch.randint(0, 40000, (1, 64), device="cuda"); am = torch.ones_like(ids)
kw = dict(input_ids=ids, attention_mask=am, max_new_tokens=96, min_new_tokens=96, do_sample=False)
def timed(name, fn):
    for i in range(3):
        torch.cuda.synchronize(); t = time.perf_counter(); fn(); torch.cuda.synchronize()
        print(name, i, round(96 / (time.perf_counter() - t), 1), "tok/s", flush=True)
timed("raw", lambda: m.generate(**kw))
timed("raw+stopcrit", lambda: m.generate(**kw, stopping_criteria=StoppingCriteriaList([_StopOnEvent(threading.Event())])))
def in_thread():
    th = threading.Thread(target=lambda: m.generate(**kw)); th.start(); th.join()
timed("thread", in_thread)
def streamer_thread(timeout):
    s = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    th = threading.Thread(target=lambda: m.generate(**kw, streamer=s)); th.start()
    for _ in s: pass
    th.join()
timed("streamer-timeout120", lambda: streamer_thread(120))
timed("streamer-notimeout", lambda: streamer_thread(None))
print("switchinterval", sys.getswitchinterval())
sys.setswitchinterval(0.0005)
timed("streamer-switch0.5ms", lambda: streamer_thread(120))
sys.setswitchinterval(0.05)
timed("streamer-switch50ms", lambda: streamer_thread(120))
