from steadytext_async._worker.governor import ThreadGovernor


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
