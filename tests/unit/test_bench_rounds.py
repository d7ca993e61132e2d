from bench.rounds import in_turn


def test_every_other_round_runs_the_targets_in_reverse() -> None:
    targets = ["rag alone", "baseline", "gateway"]
    orders = [in_turn(targets, round_) for round_ in range(4)]
    assert orders == [targets, targets[::-1], targets, targets[::-1]]
    # What runs just before each target changes from one round to the next.
    before = {t: {order[order.index(t) - 1] for order in orders if order.index(t) > 0} for t in targets}
    assert before["baseline"] == {"rag alone", "gateway"}
    assert before["rag alone"] == before["gateway"] == {"baseline"}
    assert targets == ["rag alone", "baseline", "gateway"]  # not reordered in place
