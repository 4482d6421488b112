"""Property: an ACL's mapped_luns either parse into exactly the entries given (and survive the
dump round trip), or are refused with a problem at their own JSON path; never anything else."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from odxtarget.config import ConfigError, dump_config, parse_config

SOURCE = "/etc/odxtarget/config.json"
TARGET_LUNS = (0, 3, 7)
values = st.one_of(st.integers(-2, 16385), st.booleans(), st.none(), st.text(max_size=3))
entries = st.fixed_dictionaries(
    {"mapped_lun": st.one_of(st.integers(0, 16383), values), "lun": st.one_of(st.sampled_from(TARGET_LUNS), values)},
    optional={"write_protect": st.one_of(st.booleans(), values)},
)


def document(mapped: list) -> dict:
    return {
        "storage_objects": [{"name": f"d{n}", "size": "1M", "extents": [{"path": f"d{n}.img"}]} for n in TARGET_LUNS],
        "targets": [{"iqn": "iqn.2026-11.org.example:t",
                     "luns": [{"lun": n, "storage_object": f"d{n}"} for n in TARGET_LUNS],
                     "acls": [{"initiator": "iqn.2026-11.org.example:h", "mapped_luns": mapped}]}],
    }


def _valid(entry: dict) -> bool:
    number, lun = entry["mapped_lun"], entry["lun"]
    return (type(number) is int and 0 <= number <= 16383 and type(lun) is int and lun in TARGET_LUNS
            and type(entry.get("write_protect", False)) is bool)


@settings(max_examples=300, deadline=None)
@given(mapped=st.lists(entries, max_size=5))
def test_mapped_luns_parse_exactly_or_are_refused_where_they_are(mapped):
    numbers = [entry["mapped_lun"] for entry in mapped]
    expect_ok = all(_valid(entry) for entry in mapped) and len(set(numbers)) == len(numbers)
    try:
        config = parse_config(document(mapped), SOURCE)
    except ConfigError as error:
        assert not expect_ok, error.problems
        assert all(problem.startswith("targets[0].acls[0].mapped_luns[") for problem in error.problems)
        return
    assert expect_ok
    parsed = config.targets[0].acls[0].mapped_luns
    assert [(m.mapped_lun, m.lun, m.write_protect) for m in parsed] == [
        (entry["mapped_lun"], entry["lun"], entry.get("write_protect", False)) for entry in mapped]
    assert parse_config(dump_config(config), SOURCE) == config
