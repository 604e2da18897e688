"""`sipec label` end to end: the real command as a process, its page driven by keyboard in headless Chromium.

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and the selenium package
(dev extras); skipped, naming what is missing, without them.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from sipec.data.labels import read_behaviour_csv, read_identity_csv
from sipec.label.results import Results
from tests.conftest import ServerProcess
from tests.unit.test_label_store import make_labelling_inputs

READY = r"on (http://[\d.]+:\d+/)"


def _chromium() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if browser is None:
        pytest.skip("no Chromium browser (apt-get install chromium chromium-driver)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("no chromedriver (apt-get install chromium-driver)")
    return browser, driver


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, predicate, what: str, timeout_s: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(lambda d: predicate(d))
    except Exception as exc:
        status = driver.find_element("id", "status").text
        raise AssertionError(f"timed out waiting for {what}; page status: {status!r}") from exc


def _body(driver, name: str) -> str:
    return driver.execute_script(f"return document.body.dataset.{name} || ''")


def _labelled(driver) -> int:
    return int(driver.find_element("id", "progress").get_attribute("data-labelled") or 0)


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: _body(d, "ready") == "1", "the page to start")


def _frame_shown(driver) -> bool:
    return driver.execute_script("const i = document.getElementById('frame');"
                                 "return i.complete && i.naturalWidth === 640 && document.body.dataset.shown === i.src")


@pytest.mark.timeout(300)
def test_identity_labelling_in_the_browser(tmp_path, browser):
    video, results_dir = make_labelling_inputs(tmp_path)
    out = tmp_path / "labels"
    args = ["label", "--video", str(video), "--results", str(results_dir), "--out", str(out),
            "--names", "alice,bob", "--count", "6", "--port", "0"]
    srv = ServerProcess(args, READY, timeout_s=60)
    expected: dict[str, str] = {}
    try:
        url = srv.match.group(1)
        _open(browser, url)
        _wait(browser, _frame_shown, "the first frame")
        # label, label, skip, label: three masks labelled, the skipped one left for later
        for key, name in (("1", "alice"), ("2", "bob"), (" ", None), ("1", "alice")):
            mask, before, pos = _body(browser, "key"), _labelled(browser), _body(browser, "position")
            _press(browser, key)
            if name is None:
                _wait(browser, lambda d, pos=pos: _body(d, "position") != pos, "the skip")
                skipped = mask
            else:
                _wait(browser, lambda d, before=before: _labelled(d) == before + 1, f"label {name} of {mask}")
                expected[mask] = name
            _wait(browser, _frame_shown, "the next frame")
        assert len(read_identity_csv(out / "identities.csv")) == 3, "each label is on disk at once"

        browser.refresh()   # a reload (or a closed page) loses nothing, and starts at the first unlabelled mask
        _open(browser, url)
        assert _labelled(browser) == 3
        assert _body(browser, "key") == skipped
        assert "resumed: 3 masks" in browser.find_element("id", "status").text
        _press(browser, "2")
        _wait(browser, lambda d: _labelled(d) == 4, "the fourth label")
        expected[skipped] = "bob"
    finally:
        rc = srv.terminate()
    assert rc == 0, srv.text()
    assert "stopped" in srv.text()

    res = Results(results_dir)
    df = read_identity_csv(out / "identities.csv")
    got = {(int(r.frame), int(r.track_id)): r.identity_name for r in df.itertuples()}
    want = {(res.get(k).frame, res.get(k).track_id): name for k, name in expected.items()}
    assert got == want
    assert set(df.video) == {"video.mp4"} and (out / "video.mp4").is_file()
    assert dict(zip(df.identity_name, df.identity, strict=True)) == {"alice": 0, "bob": 1}

    from services.idnet.data import load_source
    from services.idnet.masking import MaskSettings

    data = load_source(out, MaskSettings(input_size=32, crop_px=48))   # what `sipec train idnet --data` reads
    assert len(data) == 4 and data.identity_names == ["alice", "bob"]

    srv = ServerProcess(args, READY, timeout_s=60)   # a restarted server resumes from the folder
    try:
        with urllib.request.urlopen(srv.match.group(1) + "api/state", timeout=10) as r:
            state = json.loads(r.read())
        assert state["labelled"] == 4
        assert {it["key"]: state["names"][it["identity"]] for it in state["items"]
                if it["identity"] is not None} == expected
    finally:
        assert srv.terminate() == 0


@pytest.mark.timeout(300)
def test_behaviour_labelling_in_the_browser(tmp_path, browser):
    video, results_dir = make_labelling_inputs(tmp_path)
    out = tmp_path / "labels"
    srv = ServerProcess(["label", "--mode", "behaviour", "--video", str(video), "--results", str(results_dir),
                         "--out", str(out), "--behaviours", "none,walking,rearing", "--port", "0"], READY,
                        timeout_s=60)
    try:
        url = srv.match.group(1)
        _open(browser, url)
        first = int(_body(browser, "track"))
        # walking from frame 0 to 4 for the first animal
        for key in ("2", "s", "\ue014", "\ue014", "\ue014", "\ue014", "e"):   # \ue014 = ArrowRight
            _press(browser, key)
        _wait(browser, lambda d: _labelled(d) == 1, "the first bout")
        # next animal: rearing from frame 4 back to 2 (marked end first, then start)
        for key in ("t", "3", "s", "\ue012", "\ue012", "e"):                  # \ue012 = ArrowLeft
            _press(browser, key)
        _wait(browser, lambda d: _labelled(d) == 2, "the second bout")
        second = int(_body(browser, "track"))
        assert second != first
        browser.refresh()
        _open(browser, url)
        assert _labelled(browser) == 2
    finally:
        assert srv.terminate() == 0

    df = read_behaviour_csv(out / "behaviour.csv", ["none", "walking", "rearing"])
    got = {(int(r.identity), int(r.frame)): r.behaviour for r in df.itertuples()}
    assert got == {**{(first, f): "walking" for f in range(5)}, **{(second, f): "rearing" for f in (2, 3, 4)}}

    from services.behavenet.data import open_labelled_video

    lv = open_labelled_video(out)   # what `sipec train behavenet --data` reads
    assert lv.annotations_path == Path(out / "annotations.json") and len(lv.labels) == 8
