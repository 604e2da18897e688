"""Endpoints files with one site or several: parsing, errors, which site serves which video, failover order."""

from __future__ import annotations

from collections import Counter

import pytest

from sipec.serving.sites import EndpointsError, NoSiteLeft, read_endpoints

TWO_SITES = """
sites:
  lab-a:
    weight: 3
    auth_token_file: a.token
    modules: {segnet: a:1, tracker: a:2}
  lab-b:
    modules: {segnet: b:1, tracker: b:2, posenet: b:3}
  backup:
    priority: 1
    tls: {ca: ca.pem}
    modules: {segnet: c:1, tracker: c:2}
"""


def _file(tmp_path, text, name="endpoints.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_one_site_form_as_sipec_up_writes_it(tmp_path):
    e = read_endpoints(_file(tmp_path, "segnet: localhost:50051\ntracker: localhost:50055\nauth_token_file: t\n"))
    assert [s.name for s in e.sites] == ["default"] and not e.multi_site
    assert e.sites[0].modules == {"segnet": "localhost:50051", "tracker": "localhost:50055"}
    assert e.sites[0].token_file == str(tmp_path / "t")
    assert {m: s.name for m, s in e.assign(("segnet", "tracker")).items()} == {"segnet": "default",
                                                                                "tracker": "default"}


def test_sites_by_priority_then_weight_and_the_same_video_always_to_the_same_site(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    e = read_endpoints(_file(tmp_path, TWO_SITES))
    assert e.multi_site and e.sites[0].token_file == str(tmp_path / "a.token")
    assert e.sites[2].tls is not None and e.sites[2].tls.ca == tmp_path / "ca.pem"
    first = Counter(e.assign(("segnet",), f"video{i}")["segnet"].name for i in range(2000))
    assert set(first) == {"lab-a", "lab-b"}                      # the backup (priority 1) serves nothing
    assert 2.6 < first["lab-a"] / first["lab-b"] < 3.4          # weights 3 : 1
    assert e.assign(("segnet",), "video7") == e.assign(("segnet",), "video7")
    # posenet only at lab-b; a module no site has is named
    assert e.assign(("posenet",), "video1")["posenet"].name == "lab-b"
    with pytest.raises(EndpointsError, match="no endpoint for module 'idnet'"):
        e.assign(("idnet",), "video1")


def test_a_site_marked_down_moves_only_its_own_videos_and_the_backup_takes_the_last(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    e = read_endpoints(_file(tmp_path, TWO_SITES))
    before = {f"v{i}": e.assign(("segnet",), f"v{i}")["segnet"].name for i in range(300)}
    e.down.add(("lab-a", "segnet"))
    after = {k: e.assign(("segnet", "tracker"), k) for k in before}
    assert all(a["segnet"].name == "lab-b" for a in after.values())
    assert all(after[k]["tracker"].name == before[k] for k in before)   # the tracker stays where it was
    e.down.add(("lab-b", "segnet"))
    assert e.assign(("segnet",), "v1")["segnet"].name == "backup"
    e.down.add(("backup", "segnet"))
    with pytest.raises(NoSiteLeft, match="segnet: no site left"):
        e.assign(("segnet",), "v1")


@pytest.mark.parametrize("text, message", [
    ("segnet: [a, b]\n", "module: host:port"),
    ("sites:\n  a: {modules: {segnet: x:1}}\nsegnet: y:1\n", "every module goes inside a site"),
    ("sites:\n  a: {modules: {}}\n", "modules:"),
    ("sites:\n  a: {modules: {segnet: x:1}, colour: red}\n", "unknown key"),
    ("sites:\n  a: {modules: {segnet: x:1}, weight: 0}\n", "weight must be above 0"),
    ("sites:\n  a: {modules: {segnet: x:1}, tls: {ca: missing.pem}}\n", "tls ca file not found"),
    ("sites:\n  a: {modules: {segnet: x:1}, tls: {verify: no}}\n", "tls takes"),
    ("sites: [a, b]\n", "must map site names"),
    ("{{{\n", "not valid YAML"),
])
def test_bad_endpoints_files_are_named_with_the_problem(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(EndpointsError, match=message) as err:
        read_endpoints(path)
    assert str(path) in str(err.value)
    with pytest.raises(EndpointsError, match="not found"):
        read_endpoints(tmp_path / "missing.yaml")


def test_a_named_site_never_gets_the_environments_token(tmp_path, monkeypatch):
    """$SIPEC_AUTH_TOKEN_FILE stands in for the one-site form's token file only: with sites, it may hold this
    facility's own accepted tokens, which must not travel to a partner."""
    env = tmp_path / "env.token"
    env.write_text("environment-token-0123456789\n")
    monkeypatch.setenv("SIPEC_AUTH_TOKEN_FILE", str(env))
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "a.token").write_text("lab-a-token-0123456789\n")
    sites = {s.name: s for s in read_endpoints(_file(tmp_path, TWO_SITES)).sites}
    assert sites["lab-a"].token() == "lab-a-token-0123456789"
    assert sites["lab-b"].token() is None and sites["backup"].token() is None
    one = read_endpoints(_file(tmp_path, "segnet: localhost:1\n", "one.yaml"))
    assert one.sites[0].token() == "environment-token-0123456789"
    assert sites["lab-b"].health("segnet", timeout_s=0.5) == "UNREACHABLE"   # nothing listens at b:1
