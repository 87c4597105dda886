"""Staging from the exchange database (SQLite and a real PostgreSQL database)."""

import datetime as dt
import json
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.errors import DeliveryRejected
from pipelines.staging.schema import load_schema
from pipelines.staging.snapshot import stage_source

FATHER = "11010519491231002X"
MOTHER = "110105198503030025"
AS_OF = dt.date(2026, 7, 1)


def hukou_row(citizen_id, extract_date, **changes):
    headers = [c.header for c in load_schema("hukou").columns]
    row = dict.fromkeys(headers)
    row.update(
        {
            "公民身份号码": citizen_id,
            "姓名": "张三",
            "性别": "2",
            "出生日期": "1985/3/3",
            "户号": "123456789",
            "与户主关系": "配偶",
            "人员状态": "正常",
            "extract_date": extract_date,
        }
    )
    row.update(changes)
    return row


def contract_row(contract_no, buyers, extract_date):
    return {
        "contract_no": contract_no,
        "buyers": json.dumps(buyers, ensure_ascii=False),
        "seller": "某开发商",
        "project_name": "某小区",
        "address": "某区某路1号",
        "use": "住宅",
        "signed_date": "2020-05-01",
        "status": "已备案",
        "extract_date": extract_date,
    }


def fill(url):
    """Two extracts of hukou (one after the as-of date) and one of contracts."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    hukou_columns = [c.header for c in load_schema("hukou").columns]
    hukou = sa.Table("hukou", meta, *(sa.Column(h, sa.Text) for h in hukou_columns), sa.Column("extract_date", sa.Date))
    contract = sa.Table(
        "housing_contract",
        meta,
        *(sa.Column(c.key, sa.Text) for c in load_schema("housing_contract").columns),
        sa.Column("extract_date", sa.Date),
    )
    meta.create_all(engine)
    old, new, future = dt.date(2026, 5, 31), dt.date(2026, 6, 30), dt.date(2026, 7, 31)
    with engine.begin() as conn:
        conn.execute(
            hukou.insert(),
            [
                hukou_row(FATHER, old),
                hukou_row(" 11010519491231002x ", new, 姓名="张三", 性别="1", 出生日期="19491231", 与户主关系="户主"),
                hukou_row(MOTHER, new),
                hukou_row(MOTHER, new),
                hukou_row(MOTHER[:-1] + "0", new),
                hukou_row(FATHER, future),
            ],
        )
        conn.execute(
            contract.insert(),
            [
                contract_row("C1", [{"name": "张三", "id": FATHER}, {"name": "李四", "id": MOTHER}], new),
                contract_row("C2", [{"name": "王五", "id": "3.71102E+17"}], new),
            ],
        )
    engine.dispose()


def check_staged(url, tmp_path):
    snapshot = stage_source("hukou", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path)
    accepted = pd.read_parquet(snapshot["accepted_path"])
    quarantine = pd.read_parquet(snapshot["quarantine_path"])
    assert snapshot["delivery"] == "2026-06-30"
    assert (
        snapshot["rows_in"],
        snapshot["rows_accepted"],
        snapshot["rows_quarantined"],
        snapshot["rows_duplicate"],
    ) == (4, 2, 1, 1)
    assert sorted(accepted["citizen_id"]) == sorted([FATHER, MOTHER])
    assert set(accepted["sex"]) == {"男", "女"}
    assert accepted["record_ref"].str.startswith("hukou:").all()
    assert quarantine.loc[0, "reason_code"] == "INVALID_ID_CHECKSUM"
    assert quarantine.loc[0, "record_ref"] == "hukou:" + MOTHER[:-1] + "0"
    assert json.loads(quarantine.loc[0, "raw"])["姓名"] == "张三"

    snapshot = stage_source("housing_contract", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path)
    buyers = pd.read_parquet(snapshot["accepted_path"])
    assert buyers["buyer_id"].tolist() == [FATHER, MOTHER]
    assert buyers["buyers_count"].tolist() == [2, 2]
    assert snapshot["rows_accepted"] == 1 and snapshot["rows_quarantined"] == 1

    with pytest.raises(DeliveryRejected, match="no extract on or before"):
        stage_source("hukou", landing=None, exchange_url=url, as_of=dt.date(2026, 1, 1), out_dir=tmp_path)
    with pytest.raises(DeliveryRejected, match="rental.*no such table"):
        stage_source("rental", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path)


def test_exchange_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    fill(url)
    check_staged(url, tmp_path / "out")


def test_exchange_checksum_follows_content_not_row_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    fill(url)

    def checksum():
        return stage_source("hukou", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path)["checksum"]

    first = checksum()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        table = sa.Table("hukou", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(sa.text("rowid DESC"))).mappings().all()
        conn.execute(table.delete())
        conn.execute(table.insert(), [dict(row) for row in rows])
    assert checksum() == first
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE hukou SET 姓名 = '张四' WHERE 公民身份号码 = :id"), {"id": MOTHER})
    engine.dispose()
    assert checksum() != first


@pytest.mark.postgres
def test_exchange_postgresql(tmp_path):
    name = f"zerocert_test_staging_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        fill(url)
        check_staged(url, tmp_path / "out")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_exchange_table_with_a_renamed_column_is_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE rental (record_no TEXT, tenant TEXT, start_date TEXT, end_date TEXT,"
                " registered_date TEXT, status TEXT, extract_date TEXT)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO rental VALUES ('R1', :id, '2025-09-01', '2027-08-31', '2025-09-02', '有效', '2026-06-30')"
            ),
            {"id": FATHER},
        )
    engine.dispose()
    with pytest.raises(DeliveryRejected, match="'tenant_id' missing and unknown column 'tenant'"):
        stage_source("rental", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "rental").exists()


def test_exchange_raw_row_is_json_even_with_quotes_backslashes_and_tabs(tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}"
    fill(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE hukou SET 姓名 = :name, 出生日期 = 'not a date' WHERE 公民身份号码 = :id"),
            {"name": 'A"B\\C\tD', "id": MOTHER},
        )
    engine.dispose()
    snapshot = stage_source("hukou", landing=None, exchange_url=url, as_of=AS_OF, out_dir=tmp_path / "out")
    quarantine = pd.read_parquet(snapshot["quarantine_path"])
    raws = [json.loads(raw) for raw in quarantine.raw]
    assert {'A"B\\C D'} <= {raw["姓名"] for raw in raws}
