"""Staging of file deliveries: choice of delivery, encodings, schema drift, hostile files."""

import datetime as dt
import hashlib
import json
import logging

import pandas as pd
import pyarrow as pa
import pytest

from pipelines.errors import DeliveryRejected, UsageError
from pipelines.staging.schema import load_schema, load_schemas
from pipelines.staging.snapshot import stage_source

AS_OF = dt.date(2026, 7, 1)
HUKOU = load_schema("hukou")
HEADERS = [c.header for c in HUKOU.columns]
FATHER = "11010519491231002X"
CHILD = "110105201801010019"
MOTHER = "110105198503030025"


def person(citizen_id=FATHER, **changes):
    row = {
        "公民身份号码": citizen_id,
        "姓名": "张三",
        "性别": "1",
        "出生日期": "1949-12-31",
        "民族": "汉",
        "户号": "123456789",
        "与户主关系": "户主",
        "户籍地址": "某区某路1号",
        "户籍地行政区划代码": "110105",
        "迁入本址日期": "2019/7/31",
        "监护人一公民身份号码": "",
        "监护人一关系": "",
        "监护人二公民身份号码": "",
        "监护人二关系": "",
        "人员状态": "正常",
        "更新时间": "2024-01-01 08:00:00",
    }
    row.update(changes)
    return row


def csv_text(rows, headers=HEADERS, sep=","):
    lines = [sep.join(headers)] + [sep.join(str(row.get(h, "")) for h in headers) for row in rows]
    return "\n".join(lines) + "\n"


def deliver(landing, source, day, filename, payload, complete=True):
    folder = landing / source / day
    folder.mkdir(parents=True)
    (folder / filename).write_bytes(payload)
    if complete:
        (folder / "_SUCCESS").touch()
    return folder


def stage(tmp_path, source="hukou", as_of=AS_OF):
    return stage_source(source, landing=tmp_path / "landing", exchange_url=None, as_of=as_of, out_dir=tmp_path / "out")


def staged_frames(snapshot):
    return pd.read_parquet(snapshot["accepted_path"]), pd.read_parquet(snapshot["quarantine_path"])


def test_gb18030_delivery_is_staged_with_counts_refs_and_types(tmp_path):
    rows = [
        person(),
        person(MOTHER, 姓名="李四", 性别="女", 出生日期="19850303", 与户主关系="配偶"),
        person(
            CHILD,
            姓名="张小",
            出生日期="43101",
            与户主关系="子",
            监护人一公民身份号码="110105491231002",
            监护人一关系="父亲",
        ),
        person(
            CHILD,
            姓名="张小",
            出生日期="43101",
            与户主关系="子",
            监护人一公民身份号码="110105491231002",
            监护人一关系="父亲",
        ),
        person("110105194912310021", 姓名="王五"),
    ]
    payload = csv_text(rows).encode("gb18030")
    deliver(tmp_path / "landing", "hukou", "2026-06-30", "hukou.csv", payload)
    snapshot = stage(tmp_path)
    accepted, quarantine = staged_frames(snapshot)

    assert snapshot["delivery"] == "2026-06-30"
    assert (
        snapshot["rows_in"],
        snapshot["rows_accepted"],
        snapshot["rows_quarantined"],
        snapshot["rows_duplicate"],
    ) == (5, 3, 1, 1)
    assert json.loads((tmp_path / "out/hukou/snapshot.json").read_text()) == snapshot
    assert snapshot["checksum"] == hashlib.sha256(payload).hexdigest()

    assert accepted["record_ref"].tolist() == ["hukou.csv:2", "hukou.csv:3", "hukou.csv:4"]
    child = accepted.set_index("citizen_id").loc[CHILD]
    assert child["guardian1_id"] == FATHER
    assert child["birth_date"] == pd.Timestamp("2018-01-01")
    assert accepted["sex"].tolist() == ["男", "女", "男"]
    assert str(accepted["birth_date"].dtype) == "datetime64[ns]"
    assert "110105194912310021" not in quarantine.loc[0, "detail"]
    assert quarantine.to_dict("records")[0] | {"detail": None} == {
        "source": "hukou",
        "record_ref": "hukou.csv:6",
        "reason_code": "INVALID_ID_CHECKSUM",
        "detail": None,
        "raw": csv_text([rows[4]]).splitlines()[1],
    }


def test_utf8_with_bom_and_quoted_field(tmp_path):
    rows = [person(户籍地址='"某区某路1号,2单元"'), person(MOTHER, 与户主关系="配偶")]
    payload = "\ufeff" + csv_text(rows)
    deliver(tmp_path / "landing", "hukou", "2026-06-30", "hukou.csv", payload.encode("utf-8"))
    accepted, _ = staged_frames(stage(tmp_path))
    assert accepted["hukou_address"].tolist() == ["某区某路1号,2单元", "某区某路1号"]
    assert accepted["citizen_id"].tolist() == [FATHER, MOTHER]


def test_pipe_separated_social_insurance_gb18030(tmp_path):
    headers = [c.header for c in load_schema("social_insurance").columns]
    row = dict(
        zip(
            headers,
            [
                " 11010519491231002x ",
                "张三",
                "企业职工基本养老保险",
                "参保缴费",
                "某公司",
                "91370100MA3C12346C",
                "2010年1月1日",
                "120.0",
                "202605",
            ],
        )
    )
    deliver(
        tmp_path / "landing",
        "social_insurance",
        "2026-06-30",
        "social_insurance.csv",
        csv_text([row], headers, sep="|").encode("gb18030"),
    )
    accepted, quarantine = staged_frames(stage(tmp_path, "social_insurance"))
    assert quarantine.empty
    assert accepted.loc[0, "citizen_id"] == FATHER
    assert accepted.loc[0, "local_months"] == 120
    assert accepted.loc[0, "last_paid_month"] == "202605"


def test_newest_complete_delivery_on_or_before_as_of(tmp_path, caplog):
    landing = tmp_path / "landing"
    deliver(landing, "hukou", "2026-05-31", "hukou.csv", csv_text([person()]).encode())
    deliver(landing, "hukou", "2026-06-30", "hukou.csv", csv_text([person(), person(MOTHER)]).encode(), complete=False)
    deliver(landing, "hukou", "2026-07-02", "hukou.csv", csv_text([person()] * 3).encode())
    with caplog.at_level(logging.WARNING):
        snapshot = stage(tmp_path)
    assert snapshot["delivery"] == "2026-05-31"
    assert any("2026-06-30" in r.getMessage() and "_SUCCESS" in r.getMessage() for r in caplog.records)


def test_no_delivery_before_as_of_is_rejected(tmp_path):
    deliver(tmp_path / "landing", "hukou", "2026-07-02", "hukou.csv", csv_text([person()]).encode())
    with pytest.raises(DeliveryRejected, match="no complete delivery"):
        stage(tmp_path)


def rejected_message(tmp_path, payload, source="hukou", filename="hukou.csv"):
    deliver(tmp_path / "landing", source, "2026-06-30", filename, payload)
    with pytest.raises(DeliveryRejected) as caught:
        stage(tmp_path, source)
    message = str(caught.value)
    assert "\n" not in message and source in message
    assert not (tmp_path / "out" / source / "accepted.parquet").exists()
    return message


def test_png_renamed_csv_is_rejected(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    assert "hukou.csv" in rejected_message(tmp_path, png)


@pytest.mark.parametrize("payload", [b"", b"\n", ",".join(HEADERS).encode() + b"\n"])
def test_empty_or_header_only_file_is_rejected(tmp_path, payload):
    message = rejected_message(tmp_path, payload)
    assert "empty" in message or "no data rows" in message


def test_truncated_gb18030_file_names_the_byte_offset(tmp_path):
    payload = csv_text([person()]).encode("gb18030").rstrip(b"\n")
    payload += "张".encode("gb18030")[:1]
    message = rejected_message(tmp_path, payload)
    assert f"offset {len(payload) - 1}" in message and "GB18030" in message


@pytest.mark.parametrize(
    "source, filename, declared, other",
    [("hukou", "hukou.csv", "GB18030", "UTF-8"), ("rental", "rental.jsonl", "UTF-8", "GB18030")],
)
def test_a_file_in_neither_encoding_names_the_schemas_declared_one_first(tmp_path, source, filename, declared, other):
    payload = b"\xff\xfe\xfd not a text table in any encoding\n"
    message = rejected_message(tmp_path, payload, source, filename)
    assert f"neither {declared} as its schema declares (invalid byte at offset 0) nor {other}" in message


def test_a_utf8_delivery_of_a_gb18030_source_is_still_read_as_utf8(tmp_path):
    assert HUKOU.encoding == "gb18030"
    deliver(
        tmp_path / "landing",
        "hukou",
        "2026-06-30",
        "hukou.csv",
        csv_text([person(), person(MOTHER, 姓名="李四", 与户主关系="配偶")]).encode("utf-8"),
    )
    accepted, _ = staged_frames(stage(tmp_path))
    assert accepted["name"].tolist() == ["张三", "李四"]
    assert accepted["relation_to_head"].tolist() == ["户主", "配偶"]


def _decoded(tmp_path, data: bytes, declared: str, block_bytes: int | None = None) -> bytes:
    from pipelines.staging.delivery import DeliveryFile

    (tmp_path / "delivery.csv").write_bytes(data)
    text = DeliveryFile(tmp_path / "delivery.csv", "delivery.csv", block_bytes).scan(declared, tmp_path / "spill")
    assert text.checksum == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "spill").exists() == (text.encoding == "gb18030")
    decoded = b"".join(text.text_blocks())
    text.remove_spill()
    assert not (tmp_path / "spill").exists()
    return decoded


def test_bytes_valid_in_both_encodings_are_read_in_the_declared_one(tmp_path):
    both = "谢伟,郑强\n".encode("gb18030")  # these GB18030 bytes happen to be valid UTF-8 too
    assert both.decode("utf-8") != "谢伟,郑强\n"
    assert _decoded(tmp_path, both, "gb18030").decode("utf-8") == "谢伟,郑强\n"
    assert _decoded(tmp_path, both, "utf-8") == both
    with_bom = b"\xef\xbb\xbf" + "谢伟强\n".encode()  # valid GB18030 too, BOM included
    assert _decoded(tmp_path, with_bom, "gb18030") == "谢伟强\n".encode()  # a BOM says UTF-8


@pytest.mark.parametrize("block_bytes", [1, 7, 64, None])
def test_a_delivery_read_in_blocks_of_any_size_decodes_as_read_whole(tmp_path, block_bytes):
    """Blocks end at a newline, so no character is cut, whatever the block size; a GB18030
    byte far into a file of UTF-8-looking text still makes the whole file GB18030."""
    text = "谢伟,郑强\n" * 50 + "x" * 300 + "\n张三\r\n末行"
    assert _decoded(tmp_path, text.encode("gb18030"), "utf-8", block_bytes).decode() == text
    assert _decoded(tmp_path, b"\xef\xbb\xbf" + text.encode(), "gb18030", block_bytes).decode() == text
    with pytest.raises(DeliveryRejected, match=r"invalid byte at offset 3000\)"):
        _decoded(tmp_path, b"a,b\n" * 750 + b"\xff\xfe\n", "utf-8", block_bytes)


def test_a_schema_encoding_other_than_utf8_or_gb18030_is_refused(tmp_path):
    (tmp_path / "hukou.yaml").write_text(
        "source: hukou\nfile: hukou.csv\nformat: csv\nencoding: latin-1\n"
        "natural_key: [a]\ncolumns: [{header: a, key: a, type: id}]\n"
    )
    with pytest.raises(UsageError, match="encoding must be one of utf-8, utf-8-sig, gb18030"):
        load_schema("hukou", tmp_path)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([h for h in HEADERS if h != "出生日期"], "'出生日期' missing"),
        (HEADERS + ["备注"], "unknown column '备注'"),
        ([("生日" if h == "出生日期" else h) for h in HEADERS], "'出生日期' missing and unknown column '生日'"),
    ],
)
def test_schema_drift_rejects_delivery_and_keeps_last_good_snapshot(tmp_path, headers, expected):
    landing = tmp_path / "landing"
    deliver(landing, "hukou", "2026-05-31", "hukou.csv", csv_text([person()]).encode())
    first = stage(tmp_path, as_of=dt.date(2026, 6, 1))
    before = (tmp_path / "out/hukou/accepted.parquet").read_bytes()
    deliver(landing, "hukou", "2026-06-30", "hukou.csv", csv_text([person()], headers).encode())
    with pytest.raises(DeliveryRejected) as caught:
        stage(tmp_path)
    assert expected in str(caught.value) and "2026-06-30/hukou.csv" in str(caught.value)
    assert (tmp_path / "out/hukou/accepted.parquet").read_bytes() == before
    assert json.loads((tmp_path / "out/hukou/snapshot.json").read_text()) == first


def test_a_50_mb_line_is_quarantined_and_the_rest_staged(tmp_path):
    text = csv_text([person(), person(MOTHER)])
    lines = text.splitlines()
    payload = "\n".join([lines[0], lines[1], "x," * (25 << 20), lines[2]]) + "\n"
    deliver(tmp_path / "landing", "hukou", "2026-06-30", "hukou.csv", payload.encode())
    snapshot = stage(tmp_path)
    accepted, quarantine = staged_frames(snapshot)
    assert accepted["citizen_id"].tolist() == [FATHER, MOTHER]
    assert quarantine[["record_ref", "reason_code"]].values.tolist() == [["hukou.csv:3", "MALFORMED_RECORD"]]
    assert len(quarantine.loc[0, "raw"]) < 10_000


def test_a_50_mb_json_line_is_quarantined_and_the_rest_staged(tmp_path):
    lines = [
        json.dumps(rental("R1"), ensure_ascii=False),
        '{"record_no": "' + "x" * (50 << 20) + '"}',
        json.dumps(rental("R3"), ensure_ascii=False),
    ]
    deliver(tmp_path / "landing", "rental", "2026-06-30", "rental.jsonl", ("\n".join(lines) + "\n").encode())
    accepted, quarantine = staged_frames(stage(tmp_path, "rental"))
    assert accepted["record_no"].tolist() == ["R1", "R3"]
    assert quarantine[["record_ref", "reason_code"]].values.tolist() == [["rental.jsonl:2", "MALFORMED_RECORD"]]
    assert len(quarantine.loc[0, "raw"]) < 10_000


def test_wrong_field_count_is_malformed(tmp_path):
    text = csv_text([person()]) + "a,b,c\n" + csv_text([person(MOTHER)]).splitlines()[1] + "\n"
    deliver(tmp_path / "landing", "hukou", "2026-06-30", "hukou.csv", text.encode())
    snapshot = stage(tmp_path)
    _, quarantine = staged_frames(snapshot)
    assert quarantine[["record_ref", "reason_code"]].values.tolist() == [["hukou.csv:3", "MALFORMED_RECORD"]]
    assert "3 fields" in quarantine.loc[0, "detail"]
    assert snapshot["rows_in"] == 3 and snapshot["rows_accepted"] == 2


def rental(record_no, tenant_id=FATHER, **changes):
    record = {
        "record_no": record_no,
        "tenant_name": "张三",
        "tenant_id": tenant_id,
        "landlord_id": "91370100MA3C12346C",
        "address": "某区某路1号",
        "start_date": "2025-09-01",
        "end_date": "2027-08-31",
        "registered_date": "2025-09-02",
        "status": "有效",
    }
    return record | changes


def test_jsonl_broken_line_is_malformed_rest_staged(tmp_path):
    lines = [
        json.dumps(rental("R1"), ensure_ascii=False),
        '{"record_no": "R2", "tenant_id": ',
        json.dumps(rental("R3", MOTHER, landlord_id=CHILD), ensure_ascii=False),
        "[1, 2]",
    ]
    deliver(tmp_path / "landing", "rental", "2026-06-30", "rental.jsonl", ("\n".join(lines) + "\n").encode())
    snapshot = stage(tmp_path, "rental")
    accepted, quarantine = staged_frames(snapshot)
    assert accepted["record_no"].tolist() == ["R1", "R3"]
    assert accepted["record_ref"].tolist() == ["rental.jsonl:1", "rental.jsonl:3"]
    assert quarantine[["record_ref", "reason_code"]].values.tolist() == [
        ["rental.jsonl:2", "MALFORMED_RECORD"],
        ["rental.jsonl:4", "MALFORMED_RECORD"],
    ]
    assert quarantine.loc[0, "raw"] == lines[1]
    assert snapshot["rows_in"] == 4


def test_jsonl_unknown_key_is_schema_drift(tmp_path):
    line = json.dumps(rental("R1") | {"rent": 3000}, ensure_ascii=False)
    message = rejected_message(tmp_path, line.encode(), "rental", "rental.jsonl")
    assert "unknown column 'rent'" in message


def test_all_schemas_load_and_a_broken_one_is_a_clear_error(tmp_path):
    assert set(load_schemas()) == {
        "hukou",
        "property_title",
        "housing_contract",
        "rental",
        "social_insurance",
        "individual_business",
        "enterprise",
    }
    (tmp_path / "hukou.yaml").write_text(
        "source: hukou\nfile: hukou.csv\nformat: xlsx\nnatural_key: [a]\ncolumns: [{header: a, key: a, type: id}]\n"
    )
    with pytest.raises(UsageError, match="format must be one of"):
        load_schema("hukou", tmp_path)
    (tmp_path / "hukou.yaml").write_text(
        "source: hukou\nfile: hukou.csv\nformat: csv\nnatural_key: [a]\ncolumns: [{header: a, key: a, type: idd}]\n"
    )
    with pytest.raises(UsageError, match="unknown type 'idd'"):
        load_schema("hukou", tmp_path)
    (tmp_path / "hukou.yaml").write_text("columns: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_schema("hukou", tmp_path)


def test_line_numbers_survive_chunked_parsing_and_blank_lines(tmp_path, monkeypatch):
    from pipelines.staging import readers

    monkeypatch.setattr(readers, "CHUNK_LINES", 2)
    lines = csv_text([person(), person(MOTHER), person(CHILD, 与户主关系="子")]).splitlines()
    quoted = csv_text([person(MOTHER, 户籍地址='"某区,某路2号"')]).splitlines()[1]
    payload = "\r\n".join([lines[0], lines[1], "", "a,b", lines[2], quoted, lines[3]]) + "\r\n"
    deliver(tmp_path / "landing", "hukou", "2026-06-30", "hukou.csv", payload.encode())
    snapshot = stage(tmp_path)
    accepted, quarantine = staged_frames(snapshot)
    assert accepted["record_ref"].tolist() == ["hukou.csv:2", "hukou.csv:5", "hukou.csv:6", "hukou.csv:7"]
    assert accepted["hukou_address"].tolist()[2] == "某区,某路2号"
    assert quarantine[["record_ref", "raw"]].values.tolist() == [["hukou.csv:4", "a,b"]]
    assert snapshot["rows_in"] == 5


def test_a_row_is_a_duplicate_only_when_its_whole_text_repeats_an_earlier_row():
    from pipelines.staging.quarantine import EarlierCopies

    texts = pd.Series(["A,1", "A,2", "A,1", "B,1", "A,1 ", "A,2", ""], dtype="str")
    assert EarlierCopies.in_frame(texts).tolist() == [False, False, True, False, False, True, False]


def test_duplicates_are_found_across_slices_and_never_from_a_shared_fingerprint():
    """Long rows sharing their head, tail and length share a fingerprint: only the exact
    comparison may call one a copy, and a copy in a later slice of an earlier slice's row is one."""
    from pipelines.staging.quarantine import FINGERPRINT_WORDS, EarlierCopies

    pad = "x" * 8 * FINGERPRINT_WORDS
    rows = [pad + "1" + pad, pad + "2" + pad, "short", pad + "1" + pad, "short", pad + "2" + pad, pad + "3" + pad]
    slices = [pd.Series(rows[:2], dtype="str"), pd.Series(rows[2:5], dtype="str"), pd.Series(rows[5:], dtype="str")]
    copies = EarlierCopies(pa.array(part) for part in slices)
    found = [copies.copies(part).tolist() for part in slices]
    assert found == [[False, False], [False, True, True], [True, False]]


SECRET_LINE = "root:x:0:0:root:/root:/bin/bash 37110219800101001X"


def _secret_file(tmp_path):
    secret = tmp_path / "elsewhere" / "accounts"
    secret.parent.mkdir()
    secret.write_text(SECRET_LINE + "\nmore\n", encoding="utf-8")
    return secret


def _assert_quotes_nothing_of(message: str) -> None:
    assert "root:x" not in message and "/bin/bash" not in message and "37110219800101001X" not in message


def test_a_symlinked_delivery_file_is_rejected_without_echoing_its_target(tmp_path):
    folder = deliver(tmp_path / "landing", "hukou", "2026-06-30", "placeholder", b"")
    (folder / "hukou.csv").symlink_to(_secret_file(tmp_path))
    with pytest.raises(DeliveryRejected, match="symbolic link") as caught:
        stage(tmp_path)
    _assert_quotes_nothing_of(str(caught.value))
    assert not (tmp_path / "out" / "hukou").exists()


@pytest.mark.parametrize("link", ["delivery_folder", "source_folder"])
def test_a_symlinked_folder_outside_the_landing_is_rejected(tmp_path, link):
    outside = tmp_path / "outside"
    if link == "delivery_folder":
        real = deliver(outside, "hukou", "2026-06-30", "hukou.csv", csv_text([person()]).encode("gb18030"))
        (tmp_path / "landing" / "hukou").mkdir(parents=True)
        (tmp_path / "landing" / "hukou" / "2026-06-30").symlink_to(real, target_is_directory=True)
    else:
        deliver(outside, "hukou", "2026-06-30", "hukou.csv", csv_text([person()]).encode("gb18030"))
        (tmp_path / "landing").mkdir()
        (tmp_path / "landing" / "hukou").symlink_to(outside / "hukou", target_is_directory=True)
    with pytest.raises(DeliveryRejected, match="symbolic link or lies outside the landing directory"):
        stage(tmp_path)


def test_a_delivery_that_is_not_a_table_is_quoted_short_and_masked(tmp_path):
    """A header line that is someone's secret: the error shows a short masked excerpt at most."""
    deliver(
        tmp_path / "landing",
        "hukou",
        "2026-06-30",
        "hukou.csv",
        (SECRET_LINE + "\n" + SECRET_LINE + "\n").encode("utf-8"),
    )
    with pytest.raises(DeliveryRejected) as caught:
        stage(tmp_path)
    message = str(caught.value)
    assert "bin/bash" not in message and "37110219800101001X" not in message
    assert "characters" in message


@pytest.mark.parametrize("kind", ["int", "float", "share", "month"])
def test_a_cast_run_once_per_distinct_text_gives_the_row_by_row_result(kind):
    from pipelines.staging import casting

    cast = {
        "int": casting._cast_int,
        "float": casting._cast_float,
        "share": casting._cast_share,
        "month": casting._cast_month,
    }[kind]
    texts = ["12", "12.0", "+7", "1/2", "50%", "0.5", "2024-05", "202413", "abc", None, "12", "１２", ".5", "1."]
    text = pd.Series(texts * 3, index=pd.RangeIndex(5, 5 + 3 * len(texts)), dtype="str")
    value, invalid = casting._per_distinct(cast, text)
    expected_value, expected_invalid = cast(text)
    pd.testing.assert_series_equal(value, expected_value, check_names=False)
    pd.testing.assert_series_equal(invalid, expected_invalid.astype(bool), check_names=False)


@pytest.mark.parametrize(
    "text, lines",
    [
        (b"", []),
        (b"a", ["a"]),
        (b"a\nb", ["a", "b"]),
        (b"a\nb\n", ["a", "b"]),
        (b"a\n\n", ["a", ""]),
        (b"\n", [""]),
        (b"a\r\nb\r\n", ["a", "b"]),
        (b"a\rb\nc\r", ["a\rb", "c"]),
        ("张\n三".encode(), ["张", "三"]),
    ],
)
def test_split_lines_cuts_at_each_newline_and_drops_only_the_final_empty_piece(text, lines):
    from pipelines.staging.delivery import split_lines

    assert split_lines(text).to_pylist() == lines
