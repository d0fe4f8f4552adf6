"""Tuning data: file round trip, bucket lookup, defaults, flag overrides, validation errors."""

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_tokenweave.overlap.split_plan import plan_forward
from sglang_tokenweave.overlap.tuning import (
    DEFAULT_FUSED_THRESHOLD,
    DEFAULT_SM_BUDGET,
    DEFAULT_SPLIT_OFFSET,
    DEFAULT_SPLIT_THRESHOLD,
    Bucket,
    TuningConfigError,
    TuningEntry,
    TuningKey,
    TuningTable,
    layer_shapes_for,
    load_tuning,
)

H100 = "NVIDIA H100 80GB HBM3"
# A Llama-3-8B-shaped layer: 32 heads, 8 KV heads, head_dim 128, MLP 14336.
SHAPE_8B = dict(hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                intermediate_size=14336)


def key_8b(tp=2, gpu=H100):
    return TuningKey.make(gpu, 4096, tp, layer_shapes_for(**SHAPE_8B, tp=tp))


def table_8b():
    entry = TuningEntry(
        key=key_8b(),
        buckets=(
            Bucket(tokens=512, split_offset=0, sm_budget=8, use_split=False, use_fused=False),
            Bucket(tokens=1024, split_offset=0, sm_budget=16, use_split=True),
            Bucket(tokens=4096, split_offset=256, sm_budget=12, use_split=True, gemm_carveout=True),
            Bucket(tokens=16384, split_offset=-128, sm_budget=24, use_split=False),
        ),
    )
    return TuningTable(entries=(entry,), meta={"command": "scripts/tune_tokenweave.py"})


def raw_8b():
    return copy.deepcopy(table_8b().to_json())


def test_layer_shapes_for_a_gqa_model():
    assert layer_shapes_for(**SHAPE_8B, tp=2) == {
        "qkv": (4096, 2048 + 2 * 512),
        "o": (2048, 4096),
        "gate_up": (4096, 14336),
        "down": (7168, 4096),
    }


def test_layer_shapes_replicate_kv_heads_when_fewer_than_ranks():
    shapes = layer_shapes_for(hidden_size=2048, num_heads=16, num_kv_heads=2, head_dim=128,
                              intermediate_size=8192, tp=4)
    assert shapes["qkv"] == (2048, 4 * 128 + 2 * 128)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_heads=30), "attention heads"),
        (dict(intermediate_size=14337), "intermediate size"),
        (dict(num_kv_heads=6), "KV heads"),
    ],
)
def test_layer_shapes_reject_shapes_that_do_not_shard(change, message):
    with pytest.raises(ValueError, match=message):
        layer_shapes_for(**dict(SHAPE_8B, **change), tp=4)


def test_file_round_trip(tmp_path):
    path = tmp_path / "tuning" / "h100.json"
    table = table_8b()
    table.save(str(path))
    loaded = TuningTable.load(str(path))
    assert loaded == table
    assert json.loads(path.read_text()) == table.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["h100.json"]  # no temp file left


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.integers(1, 1 << 20),
        st.tuples(st.integers(-4096, 4096), st.integers(1, 132), st.booleans(), st.booleans(), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_any_valid_entry_survives_json(buckets):
    entry = TuningEntry(
        key=key_8b(tp=4),
        buckets=tuple(
            Bucket(tokens=t, split_offset=o, sm_budget=s, use_split=split and fused,
                   use_fused=fused, gemm_carveout=carve)
            for t, (o, s, split, fused, carve) in sorted(buckets.items())
        ),
    )
    table = TuningTable(entries=(entry,))
    text = json.dumps(table.to_json())
    assert TuningTable.from_json(json.loads(text)) == table


def test_lookup_takes_the_nearest_lower_bucket():
    table = table_8b()
    at = table.lookup(key_8b(), 4096)
    inside = table.lookup(key_8b(), 16383)
    assert (at.bucket, at.split_offset, at.sm_budget, at.split_threshold) == (4096, 256, 12, 4096)
    assert at.gemm_carveout and not table.lookup(key_8b(), 1500).gemm_carveout
    assert inside.bucket == 4096 and inside.source == "tuning file"
    assert table.lookup(key_8b(), 1500).bucket == 1024
    top = table.lookup(key_8b(), 100000)
    assert top.bucket == 16384 and top.split_threshold is None and top.split_offset == -128


def test_bucket_that_declines_fusion():
    setting = table_8b().lookup(key_8b(), 700)
    assert setting.bucket == 512 and not setting.use_fused and setting.split_threshold is None


def test_below_smallest_bucket_uses_defaults():
    setting = table_8b().lookup(key_8b(), 100)
    assert setting.source == "defaults" and setting.bucket is None
    assert setting.sm_budget == DEFAULT_SM_BUDGET
    assert setting.split_offset == DEFAULT_SPLIT_OFFSET
    assert setting.split_threshold == DEFAULT_SPLIT_THRESHOLD


def test_defaults_keep_sglang_path_for_small_batches_at_every_tp():
    table = load_tuning(None)
    for tp in (2, 4, 8):
        assert not table.lookup(key_8b(tp=tp), 1).use_fused
        assert not table.lookup(key_8b(tp=tp), DEFAULT_FUSED_THRESHOLD - 1).use_fused
        assert table.lookup(key_8b(tp=tp), DEFAULT_FUSED_THRESHOLD).use_fused


def test_fused_threshold_flag_overrides_defaults_and_data():
    table = load_tuning(None)
    assert table.lookup(key_8b(tp=2), 1, fused_threshold=1).use_fused
    assert not table.lookup(key_8b(tp=4), 63, fused_threshold=64).use_fused
    flagged = table_8b().lookup(key_8b(), 700, fused_threshold=512)  # the bucket declined fusion
    assert flagged.use_fused and flagged.source == "flags" and flagged.bucket == 512


@pytest.mark.parametrize(
    "key",
    [
        key_8b(tp=4),
        key_8b(gpu="NVIDIA H200"),
        TuningKey.make(H100, 4096, 2, dict(layer_shapes_for(**SHAPE_8B, tp=2), down=(7000, 4096))),
    ],
)
def test_other_gpu_tp_or_shape_falls_back_to_defaults(key):
    setting = table_8b().lookup(key, 4096)
    assert setting.source == "defaults"
    assert setting.sm_budget == DEFAULT_SM_BUDGET


def test_defaults_split_from_the_default_threshold():
    table = load_tuning(None)
    assert table.entries == ()
    for tokens, splits in ((DEFAULT_SPLIT_THRESHOLD - 1, False), (DEFAULT_SPLIT_THRESHOLD, True)):
        setting = table.lookup(key_8b(), tokens)
        plan = plan_forward([tokens], [0], world_size=2, threshold=setting.split_threshold,
                            split_offset=setting.split_offset)
        assert plan.is_split == splits


def test_setting_drives_the_plan():
    table = table_8b()
    tuned = table.lookup(key_8b(), 5000)
    plan = plan_forward([5000], [0], world_size=2, threshold=tuned.split_threshold,
                        split_offset=tuned.split_offset)
    assert plan.cut == 2816  # 2500 + 256, rounded to 128
    declined = table.lookup(key_8b(), 20000)
    plan = plan_forward([20000], [0], world_size=2, threshold=declined.split_threshold)
    assert not plan.is_split


def test_flags_override_the_data():
    setting = table_8b().lookup(key_8b(), 4096, split_threshold=8192, sm_budget=4)
    assert setting.source == "flags"
    assert setting.split_threshold == 8192 and setting.sm_budget == 4
    assert setting.split_offset == 256  # untouched values still come from the file


def test_with_entry_replaces_the_same_key_and_keeps_others():
    table = table_8b()
    other = TuningEntry(key=key_8b(tp=4), buckets=(Bucket(tokens=1024),))
    table = table.with_entry(other)
    newer = TuningEntry(key=key_8b(), buckets=(Bucket(tokens=2048, sm_budget=20),))
    table = table.with_entry(newer)
    assert len(table.entries) == 2
    assert table.find(key_8b()) == newer
    assert table.find(key_8b(tp=4)) == other
    assert table.meta == table_8b().meta


def _edit(mutate):
    raw = raw_8b()
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda r: r["entries"][0]["buckets"]["4096"].update(sm_budget=0),
         "entries[0].buckets.4096.sm_budget"),
        (lambda r: r["entries"][0]["buckets"]["4096"].update(sm_budget=True),
         "entries[0].buckets.4096.sm_budget"),
        (lambda r: r["entries"][0]["buckets"]["1024"].update(split_offset=1.5),
         "entries[0].buckets.1024.split_offset"),
        (lambda r: r["entries"][0]["buckets"]["1024"].update(use_split="yes"),
         "entries[0].buckets.1024.use_split"),
        (lambda r: r["entries"][0]["buckets"]["1024"].update(use_fused=False),
         "entries[0].buckets.1024.use_split"),
        (lambda r: r["entries"][0]["buckets"]["1024"].update(gemm_carveout=16),
         "entries[0].buckets.1024.gemm_carveout"),
        (lambda r: r["entries"][0]["buckets"]["1024"].update(chunk=1),
         "entries[0].buckets.1024.chunk"),
        (lambda r: r["entries"][0]["buckets"]["1024"].pop("sm_budget"),
         "entries[0].buckets.1024.sm_budget"),
        (lambda r: r["entries"][0]["buckets"].update({"big": r["entries"][0]["buckets"]["1024"]}),
         "entries[0].buckets.big"),
        (lambda r: r["entries"][0]["buckets"].update({"01024": r["entries"][0]["buckets"]["1024"]}),
         "entries[0].buckets.01024"),
        (lambda r: r["entries"][0]["buckets"].clear(), "entries[0].buckets"),
        (lambda r: r["entries"][0]["layer_shapes"].pop("down"),
         "entries[0].layer_shapes.down"),
        (lambda r: r["entries"][0]["layer_shapes"].update(lm_head=[4096, 128256]),
         "entries[0].layer_shapes.lm_head"),
        (lambda r: r["entries"][0]["layer_shapes"].update(o=[2048]),
         "entries[0].layer_shapes.o"),
        (lambda r: r["entries"][0]["layer_shapes"].update(o=[2048, -1]),
         "entries[0].layer_shapes.o[1]"),
        (lambda r: r["entries"][0].update(tp=0), "entries[0].tp"),
        (lambda r: r["entries"][0].update(gpu=""), "entries[0].gpu"),
        (lambda r: r["entries"][0].update(model="llama"), "entries[0].model"),
        (lambda r: r["entries"][0].pop("hidden_size"), "entries[0].hidden_size"),
        (lambda r: r["entries"].append(copy.deepcopy(r["entries"][0])), "entries[1]"),
        (lambda r: r.update(version=2), "version"),
        (lambda r: r.update(format="other"), "format"),
        (lambda r: r.update(entries={}), "entries"),
        (lambda r: r.update(extra=1), "extra"),
    ],
)
def test_validation_names_the_bad_key(mutate, where):
    with pytest.raises(TuningConfigError) as info:
        TuningTable.from_json(_edit(mutate), source="h100.json")
    message = str(info.value)
    assert message.startswith(f"h100.json: {where}: "), message


def test_duplicate_json_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.json"
    text = json.dumps(raw_8b()).replace('"tp": 2', '"tp": 2, "tp": 4')
    path.write_text(text)
    with pytest.raises(TuningConfigError, match=r"dup.json: not valid JSON: duplicate key 'tp'"):
        TuningTable.load(str(path))


def test_unreadable_and_malformed_files_name_the_path(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(TuningConfigError, match="missing.json: cannot read"):
        load_tuning(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(TuningConfigError, match="broken.json: not valid JSON"):
        TuningTable.load(str(broken))
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(TuningConfigError, match="list.json: top level"):
        TuningTable.load(str(listed))


def test_entries_built_in_code_are_checked_and_ordered():
    entry = TuningEntry(key=key_8b(), buckets=(Bucket(tokens=4096), Bucket(tokens=1024)))
    assert [b.tokens for b in entry.buckets] == [1024, 4096]
    assert entry.bucket_for(2000).tokens == 1024
    with pytest.raises(ValueError, match="duplicate buckets"):
        TuningEntry(key=key_8b(), buckets=(Bucket(tokens=1024), Bucket(tokens=1024)))
    with pytest.raises(ValueError, match="needs the fused kernel"):
        Bucket(tokens=1024, use_split=True, use_fused=False)
    with pytest.raises(ValueError, match="must be positive"):
        Bucket(tokens=1024, sm_budget=0)
