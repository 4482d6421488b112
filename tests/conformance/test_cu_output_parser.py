"""The iscsi-test-cu output parser and the allowed-skip / known-failure judgement, on text shaped
like iscsi-test-cu 1.19.0's verbose output (no daemon needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import iscsi_test_cu as cu

SAMPLE = """\



     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: Inquiry
  Test: Standard ...passed
  Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
  Test: EVPD ...    [FAILED] INQUIRY page 0x80 failed
    second message line
FAILED
    1. test_inquiry_evpd.c:55  - CU_ASSERT_EQUAL(ret,0)
    2. test_inquiry_evpd.c:60  - CU_ASSERT_EQUAL(ret,0)
  Test: Last ...passed    [SKIPPED] printed by the suite teardown, not by Last
    [FAILED] also teardown noise

Suite: Write10
  Test: Simple ...    Write 1 block
    [SKIPPED] partially unsupported
    [FAILED] but then it failed
FAILED
    1. test_write10_simple.c:12  - CU_FAIL
  Test: Slow ...
Run Summary:    Type  Total    Ran Passed Failed Inactive
"""


def test_outcomes_follow_cunit_verdicts_and_skip_markers():
    outcomes = cu.parse_verbose_output(SAMPLE, "SCSI")
    statuses = {name: outcome.status for name, outcome in outcomes.items()}
    assert statuses == {
        "SCSI.Inquiry.Standard": cu.PASSED,
        "SCSI.Inquiry.BlockLimits": cu.SKIPPED,
        "SCSI.Inquiry.EVPD": cu.FAILED,
        "SCSI.Inquiry.Last": cu.PASSED,          # teardown messages after the verdict do not count
        "SCSI.Write10.Simple": cu.FAILED,        # a failure wins over a partial skip
        "SCSI.Write10.Slow": cu.NOT_RUN,         # started, never finished (crash or hang)
    }


def test_failure_messages_and_assertions_are_kept():
    evpd = cu.parse_verbose_output(SAMPLE, "SCSI")["SCSI.Inquiry.EVPD"]
    assert any("INQUIRY page 0x80 failed" in message for message in evpd.messages)
    assert any("test_inquiry_evpd.c:60" in message for message in evpd.messages)
    assert "[FAILED] INQUIRY page 0x80 failed" in evpd.summary()


def test_split_pattern_fills_missing_parts_with_wildcards():
    assert cu.split_pattern("SCSI") == ("SCSI", "*", "*")
    assert cu.split_pattern("SCSI.ReadOnly*") == ("SCSI", "ReadOnly*", "*")
    assert cu.split_pattern("iSCSI.iSCSITMF.LUNResetSimpleAsync") == ("iSCSI", "iSCSITMF", "LUNResetSimpleAsync")


def test_comma_separated_patterns_select_the_union_of_one_family():
    both = cu.list_tests("SCSI.Inquiry,SCSI.ReadOnly")
    assert both and both == [name for name in cu.list_tests("SCSI")
                             if name.startswith(("SCSI.Inquiry.", "SCSI.ReadOnly."))]
    assert cu.family_of("SCSI.Inquiry,SCSI.ReadOnly") == "SCSI"
    with pytest.raises(ValueError, match="one family"):
        cu.patterns_of("SCSI.Inquiry,iSCSI.iSCSITMF")


def test_suites_except_leaves_out_exactly_the_named_suites():
    remaining = set(cu.list_tests(cu.suites_except("SCSI", ["ReceiveCopyResults"])))
    assert set(cu.list_tests("SCSI")) - remaining == {"SCSI.ReceiveCopyResults.CopyStatus",
                                                      "SCSI.ReceiveCopyResults.OpParams"}
    assert remaining < set(cu.list_tests("SCSI"))
    with pytest.raises(ValueError, match="NoSuchSuite"):
        cu.suites_except("SCSI", ["NoSuchSuite"])


def test_suites_of_keeps_first_seen_order():
    assert cu.suites_of(["A.B.x", "A.B.y", "A.C.z", "A.B.w"]) == ["A.B", "A.C"]


def _patterns(tmp_path: Path, text: str) -> cu.PatternList:
    path = tmp_path / "list.txt"
    path.write_text(text)
    return cu.PatternList.load(path)


def test_pattern_list_requires_a_reason_per_entry(tmp_path):
    with pytest.raises(ValueError, match="list.txt:2"):
        _patterns(tmp_path, "# comment\nSCSI.Foo.*\n")
    patterns = _patterns(tmp_path, "\n# header\nSCSI.Foo.*   # not offered\n*Protect*  # no PI\n")
    assert patterns.reason_for("SCSI.Foo.Bar") == "not offered"
    assert patterns.reason_for("SCSI.Read10.ReadProtect") == "no PI"
    assert "SCSI.Read10.Simple" not in patterns


def test_judge_suite_allows_listed_skips_only(tmp_path):
    outcomes = cu.parse_verbose_output(SAMPLE, "SCSI")
    nothing = cu.PatternList([])
    verdict = cu.judge_suite("SCSI.Inquiry", outcomes, nothing, nothing)
    assert verdict.tests_seen == 4
    assert any(p.startswith("SCSI.Inquiry.BlockLimits: SKIPPED") for p in verdict.problems)
    assert any(p.startswith("SCSI.Inquiry.EVPD: FAILED") for p in verdict.problems)

    allowed = _patterns(tmp_path, "SCSI.Inquiry.BlockLimits  # thin provisioning not offered\n")
    verdict = cu.judge_suite("SCSI.Inquiry", outcomes, allowed, nothing)
    assert [p.split(":")[0] for p in verdict.problems] == ["SCSI.Inquiry.EVPD"]


def test_judge_suite_known_failures_are_strict(tmp_path):
    outcomes = cu.parse_verbose_output(SAMPLE, "SCSI")
    allowed = _patterns(tmp_path, "SCSI.Inquiry.BlockLimits  # thin provisioning not offered\n")
    (tmp_path / "known.txt").write_text("SCSI.Inquiry.EVPD  # pending fix\n")
    known = cu.PatternList.load(tmp_path / "known.txt")
    verdict = cu.judge_suite("SCSI.Inquiry", outcomes, allowed, known)
    assert verdict.problems == []
    assert verdict.known_failures == ["SCSI.Inquiry.EVPD: failed (known failure: pending fix)"]

    (tmp_path / "known.txt").write_text("SCSI.Inquiry.Standard  # stale entry\n")
    known = cu.PatternList.load(tmp_path / "known.txt")
    verdict = cu.judge_suite("SCSI.Inquiry", outcomes, allowed, known)
    assert any("SCSI.Inquiry.Standard: passed but listed" in p for p in verdict.problems)


def test_not_run_tests_are_problems_even_in_other_suites():
    outcomes = cu.parse_verbose_output(SAMPLE, "SCSI")
    nothing = cu.PatternList([])
    verdict = cu.judge_suite("SCSI.Write10", outcomes, nothing, nothing)
    assert verdict.tests_seen == 2
    assert any(p.startswith("SCSI.Write10.Slow: NOT RUN") for p in verdict.problems)


def test_checked_in_lists_parse():
    here = Path(__file__).parent
    allowed = cu.PatternList.load(here / "allowed_skips.txt")
    cu.PatternList.load(here / "known_failures.txt")
    assert "SCSI.ReadCapacity16.PI" in allowed
    assert "SCSI.ExtendedCopy.Simple" not in allowed, "EXTENDED COPY must run and pass now"
    assert "SCSI.Read10.Simple" not in allowed
