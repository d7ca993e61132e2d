"""Pure logic of answer variants: the file's rules, the sticky split, and the report's statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from services.cli.variant_stats import percentile, two_proportion_test, wilson_interval
from services.cli.variants import Tally, report_rows
from services.rag.config import RagSettings
from services.rag.variants.assignment import bucket, choose, identity_of
from services.rag.variants.spec import VariantError, VariantSpec, parse_file, read_file, write_weights

TWO = """
control: a
variants:
  - {name: a, version: 1, weight: 90}
  - {name: b, version: 2, weight: 10, top_k: 3, answer_mode: extractive}
"""


def test_a_file_is_validated_whole() -> None:
    parsed = parse_file(TWO, max_variants=8)
    assert [v.id for v in parsed.variants] == ["a@1", "b@2"]
    bad = {
        "duplicate": "variants: [{name: a, version: 1, weight: 1}, {name: a, version: 1, weight: 2}]",
        "no traffic": "variants: [{name: a, version: 1, weight: 0}]",
        "unknown field": "variants: [{name: a, version: 1, weight: 1, topk: 3}]",
        "bad name": "variants: [{name: A!, version: 1, weight: 1}]",
        "unknown control": "control: z\nvariants: [{name: a, version: 1, weight: 1}]",
        "not yaml": "variants: [",
        "empty": "",
    }
    for text in bad.values():
        with pytest.raises(VariantError):
            parse_file(text, max_variants=8)
    with pytest.raises(VariantError, match="at most 1"):
        parse_file(TWO, max_variants=1)


def test_a_variant_lays_its_fields_over_rags_settings() -> None:
    base = RagSettings()
    b = parse_file(TWO, 8).variants[1]
    own = b.settings(base)
    assert (own.default_top_k, own.answer_mode) == (3, "extractive")
    assert own.llm_url == base.llm_url  # unset: rag's own
    assert VariantSpec(name="x", version=1, weight=1, cost_per_1k_prompt_tokens=2).cost(500, 0) == 1.0


def test_the_fingerprint_covers_the_pipeline_not_the_weight() -> None:
    a = VariantSpec(name="a", version=1, weight=1)
    assert a.fingerprint() == a.model_copy(update={"weight": 50, "description": "x"}).fingerprint()
    assert a.fingerprint() != a.model_copy(update={"top_k": 2}).fingerprint()


def test_the_split_is_weighted_sticky_and_moves_few_users_when_weights_move() -> None:
    variants = parse_file(TWO, 8).variants
    users = [identity_of(f"u{i}", "k") for i in range(20_000)]
    counts = Counter(choose(variants, u).name for u in users)
    assert abs(counts["b"] / len(users) - 0.10) < 0.01
    assert all(choose(variants, u) == choose(variants, u) for u in users[:100])
    assert bucket("user:x") == bucket("user:x")
    # b from 10% to 20%: only a's users move (to b), none of b's move away.
    wider = [variants[0].model_copy(update={"weight": 80}), variants[1].model_copy(update={"weight": 20})]
    moved = [u for u in users if choose(variants, u).name != choose(wider, u).name]
    assert all(choose(variants, u).name == "a" for u in moved)
    assert identity_of(None, "key1") == "key:key1"


def test_weights_are_rewritten_for_the_latest_version_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "variants.yaml"
    path.write_text(TWO + "  - {name: b, version: 1, weight: 5}\n")
    write_weights(path, {"a": 0, "b": 100})
    weights = {(v["name"], v["version"]): v["weight"] for v in yaml.safe_load(path.read_text())["variants"]}
    assert weights == {("a", 1): 0, ("b", 2): 100, ("b", 1): 0}
    with pytest.raises(VariantError):
        write_weights(path, {"a": 0, "b": 0})  # no traffic left: refused, the file unchanged
    with pytest.raises(VariantError):
        write_weights(path, {"nope": 1})
    assert read_file(path, 8).variants[1].weight == 100


def test_wilson_interval_and_the_two_proportion_test() -> None:
    low, high = wilson_interval(80, 100)
    assert 0.70 < low < 0.72 and 0.86 < high < 0.88  # the textbook 0.711-0.867
    assert wilson_interval(0, 0) == (0.0, 1.0)
    known = two_proportion_test(80, 100, 35, 100)
    assert known is not None and known.significant() and known.p_value < 1e-9
    twins = two_proportion_test(78, 100, 80, 100)
    assert twins is not None and not twins.significant() and twins.p_value > 0.5
    assert two_proportion_test(5, 5, 3, 3) is None  # no variance
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 50) is None


def test_report_rows_compare_each_variant_with_the_control() -> None:
    tallies = {
        "a@1": Tally("a@1", answers=100, up=80, down=20, latencies_ms=[10.0] * 100),
        "b@1": Tally("b@1", answers=100, abstained=10, up=35, down=65, cost=1.0),
    }
    rows = report_rows(tallies, control="a@1")
    assert [r["variant"] for r in rows] == ["a@1", "b@1"]
    assert rows[0]["control"] and rows[0]["vs_control"] is None
    assert rows[1]["vs_control"]["significant"] and rows[1]["abstention_rate"] == 0.1
    assert rows[1]["cost_per_answer"] == 0.01 and rows[0]["latency_p50_ms"] == 10.0
