from steadytext_async._worker.child.governor import ThreadGovernor


def drive(gov: ThreadGovernor, share: int, cost: dict[int, float], steps: int) -> list[int]:
    used = []
    for _ in range(steps):
        n = gov.choose(share)
        assert 1 <= n <= share
        gov.record(n, cost[n])
        used.append(n)
    return used


def test_quiet_machine_uses_the_whole_share() -> None:
    used = drive(ThreadGovernor(), 2, {1: 0.028, 2: 0.018}, 400)
    assert used[-100:].count(2) >= 90


def test_contended_machine_falls_back_to_one_thread_and_probes_rarely() -> None:
    used = drive(ThreadGovernor(), 2, {1: 0.03, 2: 0.3}, 1000)
    assert used[-500:].count(1) >= 490  # probes back off to at most a few per 500 steps


def test_recovers_when_contention_ends() -> None:
    gov = ThreadGovernor()
    drive(gov, 2, {1: 0.03, 2: 0.3}, 300)
    used = drive(gov, 2, {1: 0.03, 2: 0.015}, 800)
    assert used[-100:].count(2) >= 90


def test_never_exceeds_a_shrunk_share() -> None:
    gov = ThreadGovernor()
    drive(gov, 4, {1: 0.04, 2: 0.02, 4: 0.01}, 50)
    assert set(drive(gov, 1, {1: 0.04}, 50)) == {1}
    assert ThreadGovernor.candidates(4) == [4, 2, 1]


def test_work_after_idleness_measures_the_full_share_again() -> None:
    """A batch that starts after the worker was idle drops the full share's estimate (it dates from other
    conditions) and measures it first; the other counts keep theirs. A slow sample taken at the tail of a burst
    used to keep the next lone request on one thread (24 instead of 42 tok/s)."""
    from test_batching import _StepRecorder

    from steadytext_async._worker.child.batch import Batcher
    from steadytext_async._worker.child.decode import SequenceDecoder
    from steadytext_async._worker.child.sampling import Sampler

    model = _StepRecorder()
    batcher = model.batcher = Batcher(model, slots=4, per_call=4, threads=2, send=lambda msg: None)  # type: ignore[arg-type]
    gov = batcher._gov(1)
    gov.ewma = {2: 0.200, 1: 0.040}  # stale: 2 threads looked 5x slower than 1
    assert gov.choose(2) == 1
    sampler = Sampler(temperature=0.0, seed=0, top_k=0, top_p=1.0, min_p=0.0)
    batcher.admit(1, [1, 2], 0, SequenceDecoder(model, max_new_tokens=4, sampler=sampler))
    assert gov.best(2) == 2  # the prompt is evaluated on the full share too (it used to take the 1-thread estimate)
    assert gov.ewma == {1: 0.040} and gov.choose(2) == 2  # the full share is measured again, first
    gov.ewma[2] = 0.020
    batcher.admit(2, [1, 2], 0, SequenceDecoder(model, max_new_tokens=4, sampler=sampler))  # joins: not idle
    assert gov.ewma == {2: 0.020, 1: 0.040}


def test_measuring_the_forgotten_share_again_does_not_shorten_the_probe_interval() -> None:
    """Every request after idleness measures the full share anew. That measurement came out fastest and so counted
    as a probe that found a better count: the interval went back to its minimum, and a lone 96-token request spent 3
    steps on one thread every time (about 2.5 % of its time). Now the interval keeps growing to its maximum."""
    gov = ThreadGovernor()
    ones = []
    for _ in range(20):  # lone requests with idleness between them
        gov.forget(2)
        ones.append(drive(gov, 2, {1: 0.018, 2: 0.010}, 96).count(1))
    assert gov._interval == ThreadGovernor.MAX_INTERVAL
    assert sum(ones[10:]) <= 2 * ThreadGovernor.PROBE_LEN  # 960 steps, one probe every 512 (it was 3 a request)
    # and a machine that turns busy is still noticed at the next request's first steps
    gov.forget(2)
    assert drive(gov, 2, {1: 0.018, 2: 0.050}, 96).count(1) >= 90
