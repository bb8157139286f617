"""Settings added for operating hookline: booleans, formats, and what 0 means."""

from __future__ import annotations

import pytest

from hookline import settings


def test_observability_settings_parse_from_the_environment() -> None:
    s = settings.load(
        env={
            "HOOKLINE_LOG_FORMAT": "json",
            "HOOKLINE_ACCESS_LOG": "off",
            "HOOKLINE_METRICS": "false",
            "HOOKLINE_METRICS_LISTEN": "127.0.0.1:9108",
            "HOOKLINE_METRICS_ENDPOINT_LABELS": "TRUE",
            "HOOKLINE_READY_MAX_BACKLOG_AGE": "0",
            "HOOKLINE_READY_MAX_WORKER_STALL": "7.5",
        }
    )
    assert (s.log_format, s.access_log, s.metrics) == ("json", False, False)
    assert s.metrics_listen == "127.0.0.1:9108" and s.metrics_endpoint_labels is True
    assert s.ready_max_backlog_age == 0  # the backlog check is off
    assert s.ready_max_worker_stall == 7.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOOKLINE_LOG_FORMAT", "xml"),
        ("HOOKLINE_ACCESS_LOG", "maybe"),
        ("HOOKLINE_METRICS_LISTEN", "9108"),
        ("HOOKLINE_READY_MAX_BACKLOG_AGE", "-1"),
        ("HOOKLINE_READY_MAX_WORKER_STALL", "0"),
        ("HOOKLINE_READY_MAX_WORKER_STALL", "inf"),
    ],
)
def test_a_bad_value_names_its_setting(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        settings.load(env={name: value})
