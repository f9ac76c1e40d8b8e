"""Repository discovery, version policies, config errors and hot reload, on fake runtimes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from modelport.errors import InvalidArgumentError, NotFoundError
from modelport.serving.server import build
from modelport.serving.settings import ModelConfig, ServerSettings, VersionPolicy, read_model_config
from tests.serving import fakes
from tests.serving.processes import until
from tests.serving.test_rest import _infer_body


def test_version_policies():
    versions = [3, 1, 7, 5]
    assert VersionPolicy().select(versions) == [7]
    assert VersionPolicy(latest=2).select(versions) == [5, 7]
    assert VersionPolicy(all=True).select(versions) == [1, 3, 5, 7]
    assert VersionPolicy(specific=(1, 5, 9)).select(versions) == [1, 5]
    with pytest.raises(ValueError, match="choose one"):
        VersionPolicy(latest=1, all=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # were "Input should be a valid tuple" and "Value error, unknown TorchServe handler ..."
        (
            "processors:\n  pre: {kind: image}\n",
            "invalid at processors.pre: should be a list ([...] or '- ' items), not a mapping",
        ),
        (
            "processors: {handler: image_classifierr}\n",
            "invalid at processors: unknown TorchServe handler 'image_classifierr'",
        ),
    ],
)
def test_bad_config_yaml_says_what_in_its_own_words(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(InvalidArgumentError) as bad:
        read_model_config(tmp_path)
    assert message in str(bad.value), str(bad.value)
    assert "Value error" not in str(bad.value)


def test_bad_config_yaml_names_the_field(tmp_path):
    (tmp_path / "config.yaml").write_text("max_batch_size: -3\n")
    with pytest.raises(Exception, match="invalid at max_batch_size"):
        read_model_config(tmp_path)
    (tmp_path / "config.yaml").write_text("processors:\n  pre: [{kind: image, resize: [8, 8]}\n")
    with pytest.raises(Exception, match=r"cannot read: YAML error at line 3, column 1: expected ',' or ']'") as bad:
        read_model_config(tmp_path)
    assert "\n" not in str(bad.value)
    (tmp_path / "config.yaml").write_text("version_policy: {latest: 2}\ninstances: 2\n")
    assert read_model_config(tmp_path) == ModelConfig(version_policy=VersionPolicy(latest=2), instances=2)


async def _plane(repo, **settings):
    plane = build(ServerSettings(repository=repo, max_queue_delay_ms=0, **settings))
    await plane.start()
    return plane


async def test_hot_reload_adds_changes_and_removes_versions(tmp_path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "m", config={"version_policy": {"latest": 2}})
    plane = await _plane(repo)
    try:
        assert plane.manager.get("m").version == 1
        fakes.write_model(repo, "m", version=2)
        fakes.write_model(repo, "late")
        await plane.manager.reload()
        assert plane.manager.get("m").version == 2, "the new version becomes the default"
        assert plane.manager.get("late").state.value == "READY"
        fakes.write_model(repo, "m", version=3)
        await plane.manager.reload()
        assert sorted(plane.manager.models["m"].versions) == [2, 3], "latest 2: version 1 is unloaded"
        shutil.rmtree(repo / "late")
        await plane.manager.reload()
        with pytest.raises(NotFoundError):
            plane.manager.get("late")
        before = plane.manager.get("m", "3")
        (repo / "m" / "3" / "modelport.json").touch()
        await plane.manager.reload()
        assert plane.manager.get("m", "3") is not before, "a changed version is reloaded"
    finally:
        await plane.close()


async def test_reload_swaps_without_dropping_in_flight_requests(tmp_path):
    import orjson

    from modelport.serving.v2 import decode_request

    repo = tmp_path / "repo"
    fakes.write_model(repo, "m")
    plane = await _plane(repo, golden_check=False)  # the new version loads without a run the gate would hold
    try:
        fakes.GATE.clear()
        request = decode_request(orjson.dumps(_infer_body()), None)
        in_flight = asyncio.create_task(plane.infer("m", None, request, "v2"))
        await until(lambda: plane.manager.get("m").batcher.in_flight > 0, what="a running batch")
        (repo / "m" / "1" / "modelport.json").touch()  # the version changes while a request runs
        reload = asyncio.create_task(plane.manager.reload())
        # the new version is swapped in first
        await until(lambda: not plane.manager.get("m").batcher.in_flight, what="the new version")
        fakes.GATE.set()
        response = await in_flight
        await reload
        assert response.outputs["y"].shape == (2, 3)
        again = await plane.infer("m", None, request, "v2")
        assert again.outputs["n"].tolist() == [12.0, 30.0]
    finally:
        fakes.GATE.set()
        await plane.close()


async def test_polling_picks_up_a_new_model(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    plane = await _plane(repo, poll_interval_s=0.01)
    poller = asyncio.create_task(plane.watch_repository())
    try:
        fakes.write_model(repo, "new")
        for _ in range(2000):
            if "new" in plane.manager.models and plane.manager.models["new"].versions:
                break
            await asyncio.sleep(0.01)
        assert plane.manager.get("new").state.value == "READY"
    finally:
        poller.cancel()
        await plane.close()


async def test_a_model_with_a_broken_config_is_reported_not_fatal(tmp_path):
    repo = tmp_path / "repo"
    fakes.write_model(repo, "good")
    fakes.write_model(repo, "bad")
    (repo / "bad" / "config.yaml").write_text("instances: zero\n")
    plane = await _plane(repo)
    try:
        rows = {r.name: r for r in plane.repository_index()}
        assert rows["good"].state == "READY"
        assert rows["bad"].state == "UNAVAILABLE" and "invalid at instances" in rows["bad"].reason
    finally:
        await plane.close()


async def test_requests_before_the_first_load_are_unavailable_not_unknown(tmp_path):
    """The port opens before the models load (liveness): a request then gets 503, never a 404."""
    from modelport.errors import UnavailableError

    repo = tmp_path / "repo"
    fakes.write_model(repo, "echo")
    plane = build(ServerSettings(repository=repo))
    with pytest.raises(UnavailableError, match="still loading"):
        plane.manager.get("echo")
    await plane.start()
    try:
        assert plane.manager.get("echo").version == 1
        with pytest.raises(NotFoundError):
            plane.manager.get("nope")
    finally:
        await plane.close()


async def test_a_store_that_cannot_be_listed_at_start_leaves_the_server_not_ready_until_it_can(tmp_path):
    """A pod whose store is down when it starts has no model: ready, it would take traffic and answer 404s.
    It stays live and not ready (requests: 503), and becomes ready at the first poll that lists the store."""
    from modelport.errors import UnavailableError

    repo = tmp_path / "not-yet" / "repo"
    plane = build(ServerSettings(repository=f"file://{repo}", cache_dir=str(tmp_path / "cache")))
    await plane.start()
    try:
        assert plane.live() and not plane.ready()
        with pytest.raises(UnavailableError, match="could not be listed yet"):
            plane.manager.get("echo")
        fakes.write_model(repo, "echo")
        await plane.manager.load("echo")  # model control (without polling) lists the store too
        assert plane.ready()
        assert await plane.manager._poll() == "ok"
        assert plane.ready() and plane.manager.get("echo").version == 1
        with pytest.raises(NotFoundError):
            plane.manager.get("nope")
        shutil.rmtree(repo.parent)
        assert await plane.manager._poll() == "unreachable"
        assert plane.ready(), "once listed, a store outage keeps serving what is loaded"
    finally:
        await plane.close()


def test_the_readme_config_yaml_example_is_a_valid_model_config(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Per-model settings live in `REPO/<model>/config.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "config.yaml").write_text(block)
    config = read_model_config(tmp_path)
    assert config.version_labels == {"stable": 2, "canary": 3} and config.default_version == 3
    assert config.max_batch_size == 32 and config.finite_inputs
