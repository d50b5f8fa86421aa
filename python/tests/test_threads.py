"""One model shared by several Python threads: every call gets what it gets
alone (speed is measured by bench/python/threads.py, not asserted here)."""

import threading

import numpy as np

import t5edge


def work(m, i):
    prompt = [(i * 37 + k) % 900 + 3 for k in range(5 + i % 7)] + [1]
    return (
        m.generate(prompt, max_new_tokens=12, return_ids=True).ids,
        m.generate(prompt, max_new_tokens=8, num_beams=3, return_scores=True).scores,
        m.generate(prompt, max_new_tokens=8, do_sample=True, top_p=0.9, seed=i, return_ids=True).ids,
        m.embed(prompt).tolist(),
    )


def run_threads(m, n_threads, jobs):
    results = [None] * len(jobs)

    def worker(k):
        for j in range(k, len(jobs), n_threads):
            results[j] = work(m, jobs[j])

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def test_four_threads_give_the_serial_results(decode_synth):
    for threads in (None, 1):
        m = t5edge.T5(decode_synth, threads=threads)
        jobs = list(range(16))
        serial = [work(m, j) for j in jobs]
        assert run_threads(m, 4, jobs) == serial, "threads=%s" % threads


def test_streams_from_several_threads(tiny):
    m = t5edge.T5(tiny)
    prompts = ["the quick brown fox %d" % i for i in range(4)]
    want = [m.generate(p, max_new_tokens=10) for p in prompts]
    got = [None] * 4

    def worker(i):
        got[i] = "".join(m.generate_stream(prompts[i], max_new_tokens=10))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == want


def test_the_gil_is_released_while_computing(decode_synth):
    # A Python thread keeps counting while another thread's call computes:
    # with the GIL held for the whole call, the counter could not move.
    m = t5edge.T5(decode_synth, threads=1)
    ticks = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks[0] += 1

    t = threading.Thread(target=count)
    t.start()
    try:
        before = ticks[0]
        m.generate([[5, 6, 7, 1]] * 8, max_new_tokens=64, min_new_tokens=64)
        during = ticks[0] - before
    finally:
        done.set()
        t.join()
    assert during > 0
    assert np.isfinite(during)
