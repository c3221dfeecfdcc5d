"""Forwarding tracked calls: a forward_to with an extension is dialled with sendDigits."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from dni.cli import main
from dni.errors import ConfigError
from dni.sitefile import export_sites, parse_sites
from tests.factories import load_toml, shop_toml

TOKEN = "twilio-test-token-0123456789"
VOICE = "/v1/calls/twilio/shop/voice"
INBOUND = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "From": "+8613812345678",
    "To": "+864001000001",
    "CallStatus": "ringing",
}


def shop_forwarding_to(forward_to: str) -> str:
    return shop_toml().replace('forward_to = "+862161234567"', f'forward_to = "{forward_to}"')


def dialled_number(client: FlaskClient) -> ET.Element:
    """The <Number> of the TwiML the voice webhook answers a signed inbound call with."""
    signature = RequestValidator(TOKEN).compute_signature(f"http://localhost{VOICE}", INBOUND)
    response = client.post(VOICE, data=INBOUND, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200 and response.mimetype == "text/xml"
    dial = ET.fromstring(response.get_data(as_text=True)).find("Dial")
    assert dial is not None and dial.get("answerOnBridge") == "true"
    number = dial.find("Number")
    assert number is not None
    return number


def test_forward_with_an_extension_dials_it_once_answered(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    load_toml(sessions, shop_forwarding_to("400-888-1234 转 8015"))
    number = dialled_number(client)
    assert number.text == "+864008881234"
    assert number.get("sendDigits") == "wwww8015"


def test_forward_without_an_extension_sends_no_digits(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    load_toml(sessions, shop_toml())
    number = dialled_number(client)
    assert number.text == "+862161234567"
    assert "sendDigits" not in number.attrib


@pytest.mark.parametrize(
    "written",
    [
        "400-888-1234 转 8015",
        "400-888-1234转8015",
        "400-888-1234 分机 8015",
        "+864008881234,,8015",
        "400-888-1234 ext. 8015",
        "400 888 1234 EXT 8015",
        "400-888-1234 x8015",
        "+86 400 888 1234;ext=8015",
    ],
)
def test_every_unambiguous_way_to_write_an_extension(written: str) -> None:
    (site,) = parse_sites(shop_forwarding_to(written))
    assert (site.forward_to_e164, site.forward_to_extension) == ("+864008881234", "8015")


@pytest.mark.parametrize(
    "written",
    [
        "400-888-1234-8015",  # more digits, or an extension? Refused rather than guessed
        "400-888-1234 转 80a5",
        "400-888-1234 转",
        "400-888-1234 #8015",
        "400-888-1234 转 123456789",
    ],
)
def test_an_unclear_or_bad_extension_is_refused_naming_forward_to(written: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sites(shop_forwarding_to(written))
    assert set(caught.value.fields) == {"site[shop].forward_to"}


def test_export_round_trips_the_extension(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_forwarding_to("400-888-1234 转 8015"))
    with sessions() as session:
        text = tomli_w.dumps(export_sites(session))
    assert 'forward_to = "+864008881234;ext=8015"' in text
    assert parse_sites(text) == parse_sites(shop_forwarding_to("400-888-1234 转 8015"))


@pytest.mark.usefixtures("sessions")
def test_dni_load_refuses_a_bad_extension_naming_forward_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    sites = tmp_path / "sites.toml"
    sites.write_text(shop_forwarding_to("400-888-1234 转 80a5"), encoding="utf-8")
    result = CliRunner().invoke(main, ["load", str(sites)])
    assert result.exit_code == 1
    assert "site[shop].forward_to: invalid extension '80a5'" in result.output
