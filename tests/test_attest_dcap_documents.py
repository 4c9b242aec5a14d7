"""TCB Info (v2, v3) and QE Identity (v2) parsing: every rule broken on its own is `malformed`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from haven.attest.dcap.documents import loads_strict, parse_enclave_identity, parse_tcb_info
from haven.attest.errors import AttestationError
from tests.dcap_support import SETS


def _doc(vectors: Path, index: int, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.loads((vectors / SETS[index].collateral).read_text())[name])
    return doc


@pytest.fixture
def sgx_info(vectors: Path) -> dict[str, Any]:
    return _doc(vectors, 0, "tcb_info")


@pytest.fixture
def tdx_info(vectors: Path) -> dict[str, Any]:
    return _doc(vectors, 1, "tcb_info")


@pytest.fixture
def qe_identity(vectors: Path) -> dict[str, Any]:
    return _doc(vectors, 0, "qe_identity")


def _malformed(parse: Any, doc: Any) -> None:
    with pytest.raises(AttestationError) as e:
        parse(doc)
    assert e.value.kind == "malformed"


def test_real_documents_parse(
    sgx_info: dict[str, Any], tdx_info: dict[str, Any], qe_identity: dict[str, Any]
) -> None:
    sgx = parse_tcb_info(sgx_info)
    assert (sgx.id, sgx.version, sgx.fmspc.hex(), len(sgx.levels)) == ("SGX", 3, "00a067110000", 11)
    assert sgx.levels[1].advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615") and sgx.tdx_module is None
    tdx = parse_tcb_info(tdx_info)
    assert tdx.id == "TDX" and tdx.tdx_module is not None and tdx.levels[0].tdx_components is not None
    assert [m.id for m in tdx.tdx_module_identities] == ["TDX_03", "TDX_01"]
    qe = parse_enclave_identity(qe_identity)
    assert (qe.id, qe.isvprodid, qe.miscselect_mask, qe.attributes_mask[0]) == ("QE", 1, 0xFFFFFFFF, 0xFB)


def test_tcb_info_version_2(sgx_info: dict[str, Any]) -> None:
    v2 = {k: v for k, v in sgx_info.items() if k not in ("id", "tcbLevels")}
    v2["version"] = 2
    level = sgx_info["tcbLevels"][0]
    tcb = {f"sgxtcbcomp{i + 1:02d}svn": c["svn"] for i, c in enumerate(level["tcb"]["sgxtcbcomponents"])}
    v2["tcbLevels"] = [{**level, "tcb": {**tcb, "pcesvn": 13}}]
    info = parse_tcb_info(v2)
    assert (info.id, info.version, info.levels[0].sgx_components[0], info.levels[0].pcesvn) == (
        "SGX",
        2,
        11,
        13,
    )


def _tcb_changes() -> list[tuple[str, Any]]:
    def level0(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = d["tcbLevels"][0]
        return out

    return [
        ("version 1", lambda d: d.update(version=1)),
        ("version as bool", lambda d: d.update(version=True)),
        ("id", lambda d: d.update(id="SEV")),
        ("tcbType", lambda d: d.update(tcbType=1)),
        ("fmspc short", lambda d: d.update(fmspc="00A0671100")),
        ("fmspc not hex", lambda d: d.update(fmspc="00A06711000Z")),
        ("pceId missing", lambda d: d.pop("pceId")),
        ("issueDate format", lambda d: d.update(issueDate="2025-06-19 10:56:11")),
        ("issueDate invalid", lambda d: d.update(issueDate="2025-13-19T10:56:11Z")),
        ("window inverted", lambda d: d.update(nextUpdate="2020-01-01T00:00:00Z")),
        ("no levels", lambda d: d.update(tcbLevels=[])),
        ("levels not a list", lambda d: d.update(tcbLevels={})),
        ("15 components", lambda d: level0(d)["tcb"]["sgxtcbcomponents"].pop()),
        ("svn 256", lambda d: level0(d)["tcb"]["sgxtcbcomponents"][0].update(svn=256)),
        ("svn float", lambda d: level0(d)["tcb"]["sgxtcbcomponents"][0].update(svn=1.0)),
        ("component not an object", lambda d: level0(d)["tcb"]["sgxtcbcomponents"].__setitem__(0, 3)),
        ("pcesvn negative", lambda d: level0(d)["tcb"].update(pcesvn=-1)),
        ("status unknown", lambda d: level0(d).update(tcbStatus="Fine")),
        ("advisories not a list", lambda d: level0(d).update(advisoryIDs="INTEL-SA-00615")),
        ("advisory not an id", lambda d: level0(d).update(advisoryIDs=["intel sa"])),
        ("tcbDate missing", lambda d: level0(d).pop("tcbDate")),
        ("level not an object", lambda d: d["tcbLevels"].append([])),
    ]


@pytest.mark.parametrize(("name", "change"), _tcb_changes(), ids=[n for n, _ in _tcb_changes()])
def test_tcb_info_rules(sgx_info: dict[str, Any], name: str, change: Any) -> None:
    doc = copy.deepcopy(sgx_info)
    change(doc)
    _malformed(parse_tcb_info, doc)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("tdxModule"),
        lambda d: d["tdxModule"].update(mrsigner="00"),
        lambda d: d["tdxModule"].update(attributesMask=5),
        lambda d: d["tcbLevels"][0]["tcb"].pop("tdxtcbcomponents"),
        lambda d: d.update(tdxModuleIdentities={}),
        lambda d: d["tdxModuleIdentities"][0].pop("id"),
        lambda d: d["tdxModuleIdentities"][0].update(tcbLevels=[]),
        lambda d: d["tdxModuleIdentities"][0]["tcbLevels"][0].update(tcbStatus="ConfigurationNeeded"),
    ],
)
def test_tdx_tcb_info_rules(tdx_info: dict[str, Any], change: Any) -> None:
    doc = copy.deepcopy(tdx_info)
    change(doc)
    _malformed(parse_tcb_info, doc)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(version=3),
        lambda d: d.update(id="PCE"),
        lambda d: d.update(miscselect="000000"),
        lambda d: d.update(attributes="11"),
        lambda d: d.update(mrsigner=None),
        lambda d: d.update(isvprodid=70000),
        lambda d: d.update(tcbLevels=[]),
        lambda d: d["tcbLevels"][0]["tcb"].update(isvsvn="8"),
        lambda d: d["tcbLevels"][0].update(tcbStatus="SWHardeningNeeded"),
        lambda d: d.update(nextUpdate="2000-01-01T00:00:00Z"),
    ],
)
def test_qe_identity_rules(qe_identity: dict[str, Any], change: Any) -> None:
    doc = copy.deepcopy(qe_identity)
    change(doc)
    _malformed(parse_enclave_identity, doc)


def test_documents_must_be_objects() -> None:
    _malformed(parse_tcb_info, [])
    _malformed(parse_enclave_identity, "QE")


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', "{", "[" * 100000])
def test_strict_json(text: str) -> None:
    with pytest.raises(AttestationError) as e:
        loads_strict(text, "doc")
    assert e.value.kind == "malformed"
