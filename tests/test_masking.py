"""No whole resident ID reaches a log line or an error message."""

import logging

from pipelines.masking import MaskingFilter, mask_ids_in
from pipelines.resident_id import check_character, mask_id, mask_name


def test_mask_id_keeps_region_and_last_four():
    assert mask_id("37110219491231002X") == "371102********002X"
    assert mask_name("张三丰") == "张**"


def test_ids_in_free_text_are_masked_in_both_lengths():
    text = "guardian 37110219491231002X and legacy 110105491231002 rejected"
    masked = mask_ids_in(text)
    assert "37110219491231002X" not in masked and "110105491231002" not in masked
    assert "371102********002X" in masked


def test_other_numbers_survive():
    assert mask_ids_in("row 12345 of 3000000, code 371102") == "row 12345 of 3000000, code 371102"


def test_logging_filter_masks_formatted_args(caplog):
    logger = logging.getLogger("zerocert.test.masking")
    logger.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("could not link %s", "37110219491231002X")
    assert "37110219491231002X" not in caplog.text
    assert "371102********002X" in caplog.text


def test_check_character_matches_gb11643_example():
    assert check_character("11010519491231002") == "X"


def test_every_logger_is_masked_once_the_factory_is_installed():
    import io

    from pipelines.masking import mask_every_log_record

    mask_every_log_record()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    other = logging.getLogger("airflow.task.something")
    other.addHandler(handler)
    other.setLevel(logging.INFO)
    try:
        other.info("guardian %s linked", "37110219491231002X")
    finally:
        other.removeHandler(handler)
    assert "37110219491231002X" not in stream.getvalue()
    assert "371102********002X" in stream.getvalue()
