"""The FLARE dashboard on loopback: provisioning through its REST API, its web pages in headless Chromium (as the
project admin sees them), and ``flare-vlp deploy dashboard`` end to end (dashboard -> kits -> server and sites from
their kits -> a FedAvg job through the admin's kit -> result -> everything stopped).

Screenshots of the browser walk go to ``$FLARE_VLP_SCREENSHOTS`` when set (``docs/images`` keeps the committed ones:
``FLARE_VLP_SCREENSHOTS=docs/images pytest tests/fl/test_dashboard.py -k browser``), else to the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from deployment_helpers import DEPLOY_CREDENTIAL, DEPLOY_SITES, listening

from flare_vlp.fl.dashboard import DashboardAPI, DashboardError, DashboardServer, provision_with_dashboard, unlock_kit
from flare_vlp.fl.poc import poc_pids

CREDENTIAL = DEPLOY_CREDENTIAL
SITES = DEPLOY_SITES
QUICK = {"train": {"bn_recalibration_batches": 1}, "eval": {"untrained_floor": False}}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def provisioned(deployment):
    """The session's dashboard with its frozen 2-site project and downloaded kits (tests/fl/conftest.py
    ``deployment``: its finalizer asserts that no dashboard or FLARE process is left)."""
    return deployment.dashboard, deployment.kits


def test_dashboard_provisions_a_loopback_mtls_project_with_flare_vlp_allowed(provisioned):
    dashboard, kits = provisioned
    assert all(a.startswith("127.0.0.1:") for a in listening(poc_pids(dashboard.web_root))), "dashboard binds loopback"
    assert (dashboard.web_root / "db.sqlite").is_file()  # the database is in the web root, not in site-packages
    server = json.loads((kits.server / "startup" / "fed_server.json").read_text())["servers"][0]
    assert server["service"]["target"] == f"localhost:{kits.port}" and server["connection_security"] == "mtls"
    for kit in [kits.server, *kits.clients.values()]:
        assert "flare_vlp." in json.loads((kit / "local" / "resources.json").read_text())["class_allow_list"], kit
    resources = json.loads((kits.server / "local" / "resources.json").read_text())
    job_store = next(c for c in resources["components"] if c["id"] == "job_manager")["args"]["uri_root"]
    assert job_store == str(kits.server / "storage" / "jobs")
    client = json.loads((kits.clients["site-1"] / "startup" / "fed_client.json").read_text())
    assert client["servers"][0]["service"]["target"] == f"localhost:{kits.port}"
    admin = json.loads((kits.admin / "startup" / "fed_admin.json").read_text())["admin"]
    assert admin["username"] == kits.admin_user and admin["port"] == kits.port
    assert {c["name"]: c["approval_state"] for c in kits.listing["clients"]} == {"site-1": 100, "site-2": 100}
    assert {u["email"]: u["role"] for u in kits.listing["users"]} == {
        "admin@flare-vlp.org": "project_admin",
        kits.admin_user: "lead",
    }


def _pin_past_the_check_byte(zip_path: Path) -> str:
    """A wrong PIN that ZipCrypto's one-byte password check lets through for the zip's first entry (~1 in 256)."""
    import zipfile

    with zipfile.ZipFile(zip_path) as z:
        first = z.infolist()[0]
        for i in range(20_000):
            try:
                z.open(first, pwd=f"wrong-{i}".encode()).close()
                return f"wrong-{i}"
            except RuntimeError:  # "Bad password": the check byte caught it
                continue
    raise AssertionError(f"no wrong PIN passed the check byte of {zip_path}")


def test_unlock_kit_leaves_nothing_half_written_and_replaces_an_older_kit_whole(provisioned, tmp_path):
    dashboard, kits = provisioned
    api = DashboardAPI(dashboard.url)
    api.login(*CREDENTIAL.split(":")[:2])
    site_id = next(c["id"] for c in kits.listing["clients"] if c["name"] == "site-1")
    zip_path = api.download_kit("clients", site_id, tmp_path / "site-1.zip", "0123456789ab")
    kit = unlock_kit(zip_path, tmp_path / "kit", "0123456789ab")
    assert os.access(kit / "startup" / "start.sh", os.X_OK)
    files = sorted(p.relative_to(kit) for p in kit.rglob("*"))
    (kit / "stale-from-an-older-project.txt").write_text("x")
    assert unlock_kit(zip_path, kit, "0123456789ab") == kit
    assert sorted(p.relative_to(kit) for p in kit.rglob("*")) == files  # replaced whole, not merged

    # A wrong PIN that passes the check byte fails later (zlib or CRC); the older kit stays as it was, no temp left.
    wrong = _pin_past_the_check_byte(zip_path)
    with pytest.raises(DashboardError, match="site-1.zip: cannot unlock the startup kit"):
        unlock_kit(zip_path, kit, wrong)
    with pytest.raises(DashboardError, match="site-1.zip: cannot unlock the startup kit"):
        unlock_kit(zip_path, tmp_path / "new-kit", wrong)
    assert sorted(p.relative_to(kit) for p in kit.rglob("*")) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit", "site-1.zip"]

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(DashboardError, match="notes: it exists and is not a kit"):
        unlock_kit(zip_path, tmp_path / "notes", "0123456789ab")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_dashboard_errors_name_what_is_wrong(provisioned, tmp_path):
    dashboard, kits = provisioned
    with pytest.raises(DashboardError, match="login of 'admin@flare-vlp.org' refused"):
        DashboardAPI(dashboard.url).login("admin@flare-vlp.org", "not-the-password")
    with pytest.raises(DashboardError, match="site-1.zip: cannot unlock the startup kit"):
        unlock_kit(kits.server.parent / "site-1.zip", tmp_path / "x", "wrong")
    api = DashboardAPI(dashboard.url)
    api.login(*CREDENTIAL.split(":")[:2])
    with pytest.raises(DashboardError, match="Project is frozen"):
        api.set_project(title="changed after the freeze")
    with pytest.raises(ValueError, match="must be 'email:password:org'"):
        DashboardServer(tmp_path, "admin@x.org:no-org")
    with pytest.raises(ValueError, match="at most 16 characters"):
        provision_with_dashboard(dashboard.url, CREDENTIAL, tmp_path, SITES, project="a-very-long-project-name")


def test_deploy_dashboard_cli_refuses_a_used_folder_before_starting_anything(tmp_path, capsys):
    from flare_vlp.cli import build_parser, main

    args = build_parser().parse_args(["deploy", "dashboard", "--out", str(tmp_path / "new")])
    assert (args.method, args.config, args.rounds, args.sites) == ("fedavg", "tiny", 2, None)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("x")
    assert main(["deploy", "dashboard", "--out", str(tmp_path / "used")]) == 2
    assert f"{tmp_path / 'used'}: exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "used" / "deploy").exists()


def _browser():
    """Headless Chromium through Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"{missing} not installed: Debian's chromium and chromium-driver packages (scripts/setup.sh)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,760"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    return webdriver, options, Service(CHROMEDRIVER)


@pytest.mark.timeout(180)
def test_browser_walk_of_the_dashboard_as_the_project_admin(provisioned, tmp_path):
    webdriver, options, service = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    dashboard, kits = provisioned
    shots = Path(os.environ.get("FLARE_VLP_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(service=service, options=options)
    wait = WebDriverWait(driver, 30)

    def see(text: str) -> None:
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), text))

    def shot(name: str) -> None:
        time.sleep(0.5)  # let the page finish drawing
        driver.save_screenshot(str(shots / f"dashboard-{name}.png"))

    email, password, _ = CREDENTIAL.split(":")
    try:
        driver.get(dashboard.url + "/")
        see("Login")
        see("Clients registered: 2")
        driver.find_element(By.NAME, "username").send_keys(email)
        driver.find_element(By.NAME, "password").send_keys(password)
        shot("1-login")
        driver.find_element(By.XPATH, "//button[normalize-space()='Sign In']").click()
        wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "CLIENT SITES"))).click()
        see("Client Sites Dashboard")
        see("site-2")
        rows = driver.find_element(By.TAG_NAME, "body").text
        assert rows.count("Approved") >= 2, rows
        shot("2-client-sites")
        driver.find_element(By.LINK_TEXT, "USERS DASHBOARD").click()
        see(kits.admin_user)
        shot("3-users")
        driver.find_element(By.LINK_TEXT, "DOWNLOADS").click()
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Download Server Startup Kit']")))
        driver.find_element(By.XPATH, "//button[normalize-space()='Download Server Startup Kit']").click()
        see("The secure PIN is:")
        pin = driver.find_element(By.TAG_NAME, "body").text.split("The secure PIN is:")[1].split()[0]
        shot("4-download-pin")
        zip_path = downloads / "localhost.zip"
        deadline = time.monotonic() + 30
        while not zip_path.is_file() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert zip_path.is_file(), f"no kit downloaded: {sorted(p.name for p in downloads.glob('*'))}"
    finally:
        driver.quit()
    kit = unlock_kit(zip_path, tmp_path / "server-kit", pin)  # the PIN the page showed opens the zip
    server = json.loads((kit / "startup" / "fed_server.json").read_text())["servers"][0]
    assert server["service"]["target"] == f"localhost:{kits.port}"
    names = ["1-login", "2-client-sites", "3-users", "4-download-pin"]
    assert sorted(p.name for p in shots.glob("dashboard-*.png")) == [f"dashboard-{n}.png" for n in names]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_deploy_dashboard_end_to_end_on_loopback(tmp_path, tiny_data_dir):
    """The one command: dashboard, kits, server + 2 sites from their kits, a FedAvg job (2 rounds) through the
    admin's kit, the result downloaded and evaluated; nothing of it left running or listening afterwards."""
    from flare_vlp.methods.run_spec import DataSource, RunSpec
    from flare_vlp.recipes.dashboard_run import run_with_dashboard

    out = tmp_path / "deploy"
    lines, seen = [], {}

    def echo(line: str) -> None:
        print(line)
        lines.append(line)
        if line.startswith("prod: submitted job"):  # the system is up: its processes and listeners
            seen["pids"] = poc_pids(out / "deploy")
            seen["listening"] = listening(seen["pids"])

    t0 = time.perf_counter()
    spec = RunSpec("fedavg", num_rounds=2, local_steps=1, data=DataSource(data_dir=str(tiny_data_dir)),
                   config_overrides=QUICK)  # fmt: skip
    summary = run_with_dashboard(out, spec, timeout=300, echo=echo)
    seconds = time.perf_counter() - t0
    print(f"\nE2E deploy dashboard: {seconds:.0f} s wall")
    assert summary and (out / "run" / "models" / "global.safetensors").is_file()
    assert any("round 1/2" in line for line in lines) and any("round 2/2" in line for line in lines), lines
    assert any("FINISHED:COMPLETED" in line for line in lines)
    events = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["sites"] for e in events if e["event"] == "round"] == [SITES, SITES]
    deployment = json.loads((out / "deploy" / "deployment.json").read_text())
    assert deployment["dashboard"].startswith("http://127.0.0.1:")
    assert len(seen["pids"]) >= 4, seen  # dashboard (master + worker), server, 2 sites (+ job processes)
    assert seen["listening"] and all(a.startswith("127.") for a in seen["listening"]), seen["listening"]
    assert poc_pids(out / "deploy") == [], "processes of the deployment survived"
    shutil.rmtree(out / "deploy" / "kits", ignore_errors=True)
