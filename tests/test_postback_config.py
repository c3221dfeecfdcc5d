"""`[[site.postback]]` in the sites file: validated by `dni load` with every error named, stored
as dni.outbox reads it, and written back by `dni export`."""

from __future__ import annotations

import pytest
import tomli_w
from sqlalchemy.orm import Session, sessionmaker

from dni.errors import ConfigError
from dni.outbox import destinations
from dni.sitefile import export_sites, parse_sites
from tests.factories import load_toml, shop_toml

GOOD = """
[[site.postback]]
name = "google"
platform = "google_ads"
on = ["qualified", "sale"]
min_confidence = 0.9
assist = true
customer_id = "123-456-7890"
developer_token = "env:GOOGLE_ADS_DEVELOPER_TOKEN"
client_id = "1234.apps.googleusercontent.com"
client_secret = "env:GOOGLE_ADS_CLIENT_SECRET"
refresh_token = "env:GOOGLE_ADS_REFRESH_TOKEN"
conversion_action = { qualified = 111, sale = "222" }

[[site.postback]]
name = "baidu"
platform = "baidu_ocpc"
token = "env:BAIDU_OCPC_TOKEN"
new_type = 30
on = ["qualified"]

[[site.postback]]
name = "crm"
platform = "webhook"
url = "https://crm.example.cn/hooks/dni"
secret = "env:CRM_HOOK_SECRET"
"""


def errors_of(tables: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        parse_sites(shop_toml() + tables)
    return raised.value.fields


def test_destinations_are_stored_as_the_outbox_reads_them() -> None:
    (site,) = parse_sites(shop_toml() + GOOD)
    google, baidu, crm = destinations(site.postbacks)
    assert (google.name, google.platform, google.on) == (
        "google",
        "google_ads",
        ("qualified", "sale"),
    )
    assert (google.min_confidence, google.assist, google.max_attempts) == (0.9, True, 10)
    assert google.settings["conversion_action"] == {"qualified": "111", "sale": "222"}
    assert baidu.settings["new_type"] == {"qualified": "30"}
    assert (baidu.min_confidence, baidu.assist) == (0.8, False)
    assert crm.on == ("call.created", "call.attributed", "call.outcome")
    assert crm.url == "https://crm.example.cn/hooks/dni"


@pytest.mark.parametrize(
    ("tables", "path", "says"),
    [
        ('[[site.postback]]\nname = "x"\nplatform = "myspace"\n', "postback[x].platform", "one of"),
        ('[[site.postback]]\nplatform = "webhook"\n', "postback[0].name", "required"),
        (
            '[[site.postback]]\nname = "x"\nplatform = "webhook"\nsecret = "0123456789abcdef0"\n',
            "postback[x].url",
            "required",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\ntoken = "t0123456789"\n',
            "postback[x].new_type.qualified",
            "required",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\nnew_type = 3\n',
            "postback[x].token",
            "required",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\ntoken = "t0123456789"\n'
            'new_type = 3\non = ["paid"]\n',
            "postback[x].on[0]",
            "one of",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\ntoken = "t0123456789"\n'
            "new_type = 3\nmin_confidence = 2\n",
            "postback[x].min_confidence",
            "from 0 to 1",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\ntoken = "t0123456789"\n'
            'new_type = 3\ndeveloper_token = "y"\n',
            "postback[x].developer_token",
            "unknown setting",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "ga4"\nmeasurement_id = "G-ABC123"\n'
            'api_secret = "s0123456789"\nassist = true\n',
            "postback[x].assist",
            "takes no conversions of assisting clicks",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "baidu_ocpc"\ntoken = "t0123456789"\n'
            "new_type = { qualified = 3, paid = 4 }\n",
            "postback[x].new_type.paid",
            "not an event",
        ),
        (
            '[[site.postback]]\nname = "x"\nplatform = "webhook"\nurl = "ftp://crm"\n'
            'secret = "0123456789abcdef0"\n',
            "postback[x].url",
            "http(s)",
        ),
    ],
)
def test_every_bad_setting_is_named(tables: str, path: str, says: str) -> None:
    errors = errors_of(tables)
    assert says in errors[f"site[shop].{path}"], errors


def test_two_destinations_of_one_name_are_refused() -> None:
    table = (
        '[[site.postback]]\nname = "x"\nplatform = "webhook"\nurl = "https://a.cn/"\n'
        'secret = "0123456789abcdef0"\n'
    )
    errors = errors_of(table + table)
    assert any("postback" in path for path in errors), errors


def test_load_and_export_round_trip(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml() + GOOD)
    with sessions() as session:
        exported = export_sites(session)
    (again,) = parse_sites(tomli_w.dumps(exported))
    (site,) = parse_sites(shop_toml() + GOOD)
    assert again.postbacks == site.postbacks
