"""Long menus and long texts over USSD: 160-character screens with 98 More / 0 Back."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from convo.config import Settings
from convo.devkit.convtest import UssdPhone, flask_poster
from convo.web import create_app

FLOWS = Path(__file__).resolve().parents[2] / "flows"
PRODUCTS = [f"Product number {i} with a long name" for i in range(1, 13)]


@pytest.fixture
def phone(tmp_path):
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d, ignore=shutil.ignore_patterns("tests"))
    options = "\n".join(f"      - label: {p}\n        next: chose_{i}" for i, p in enumerate(PRODUCTS, 1))
    ends = "\n".join(f"  chose_{i}:\n    end: You chose {p}." for i, p in enumerate(PRODUCTS, 1))
    (d / "long.yaml").write_text(textwrap.dedent("""
        flow: long
        states:
          menu:
            menu: "Our products:"
            options:
        """) + options + "\n      - label: Terms\n        next: terms\n" + ends +
        "\n  terms:\n    end: \"" + " ".join(f"Clause {i} says something important." for i in range(1, 16)) + "\"\n")
    (d / "channels.yaml").write_text((d / "channels.yaml").read_text().replace('"*384*12#": main',
                                                                                '"*384*12#": main\n    "*384*99#": long'))
    app = create_app(Settings(redis_url="memory://", flows_dir=str(d), flows_reload_seconds=0))
    return UssdPhone(flask_poster(app.test_client()), "+254700000101", "/gateways/africastalking/ussd")


def screen(resp) -> str:
    status, body = resp
    assert status == 200 and len(body) <= 160, (len(body), body)
    return body


def test_a_long_menu_pages_forward_and_back_and_numbers_stay_the_same(phone):
    first = screen(phone.dial("*384*99#"))
    assert first.startswith("CON Our products:\n1. Product number 1") and first.endswith("98. More")
    seen = [first]
    while seen[-1].endswith("98. More"):
        seen.append(screen(phone.send("98")))
    assert "0. Back" in seen[-1] and "13. Terms" in seen[-1]
    options = [l for s in seen for l in s[4:].split("\n") if l[:1].isdigit() and not l.startswith(("98.", "0."))]
    assert options == [f"{i}. {p}" for i, p in enumerate(PRODUCTS, 1)] + ["13. Terms"]
    assert screen(phone.send("0")) == seen[-2]
    assert screen(phone.send("12")) == "END You chose Product number 12 with a long name."


def test_a_long_text_is_read_page_by_page_and_closes_after_the_last(phone):
    phone.dial("*384*99#")
    page = screen(phone.send("13"))
    assert page.startswith("CON Clause 1 says") and page.endswith("98. More")
    words = [w for l in page[4:].split("\n") if not l.startswith(("98.", "0.")) for w in l.split()]
    while page.endswith("98. More"):
        page = screen(phone.send("98"))
        words += [w for l in page[4:].split("\n") if not l.startswith(("98.", "0.")) for w in l.split()]
    assert words == " ".join(f"Clause {i} says something important." for i in range(1, 16)).split()
    assert page.startswith("CON ") and page.endswith("\n0. Back")      # the last screen can still go back
    last = screen(phone.send("1"))                                     # any other answer: done reading
    assert last == "END " + page[4:].rsplit("\n", 1)[0]
