"""The layered storage stack keeps bytes intact in every order and form, and cleans up.

The stack runs for real: zlib, AES-GCM from ``cryptography``, a device file,
and as servers one forked process per layer.
"""

from __future__ import annotations

import os
import sysconfig
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from cryptography.exceptions import InvalidTag

from bench.layers import BLOCK_BYTES, EXPERIMENT, metrics
from bench.probes.layers import TEMP_PREFIX, open_stack, stdlib_files
from harness.names import NameSource
from harness.supervisor import Supervisor
from servers.layers import FramedPipe, LayerError, StackClient, stack_layers

from .helpers import run_worker

ORDERS = ["c-then-e", "e-then-c"]
TRANSPORTS = ["call", "pipe"]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def sample_files() -> list[tuple[str, bytes]]:
    """Real stdlib files: an empty one, one under a block, one not a multiple of a block
    over several blocks, one exactly two blocks long (cut from a real file)."""
    empty = next(p for p in sorted(STDLIB.rglob("__init__.py")) if p.stat().st_size == 0)
    big = next(p for p in sorted(STDLIB.glob("*.py"))
               if p.stat().st_size > 3 * BLOCK_BYTES and p.stat().st_size % BLOCK_BYTES)
    small = STDLIB / "keyword.py"
    exact = ("exact.py", (STDLIB / "typing.py").read_bytes()[:2 * BLOCK_BYTES])
    files = [(str(p.relative_to(STDLIB)), p.read_bytes()) for p in (empty, small, big)]
    assert files[0][1] == b"" and 0 < len(files[1][1]) < BLOCK_BYTES
    return [*files, exact]


def names() -> NameSource:
    return NameSource(f"ipcb-{os.getpid()}-test-layers-")


# This session's names only: another run or test session may share the machine.
def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"ipcb-{os.getpid()}-*layers-*")}


def shm_entries() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"*ipcb-{os.getpid()}-*")}


@pytest.fixture
def clean():
    """Every test leaves no process, no temporary folder and no shared-memory name."""
    temps, shm = leftovers(), shm_entries()
    yield
    assert psutil.Process().children(recursive=True) == []
    assert leftovers() <= temps
    assert shm_entries() <= shm


def write_all(client: StackClient, files: list[tuple[str, bytes]]) -> None:
    for name, data in files:
        client.write(name, data)
    client.sync()
    client.drop()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("order", ORDERS)
def test_round_trip_gives_identical_bytes(order, transport, clean):
    files = sample_files()
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder, \
            Supervisor(names()) as sup:
        device = os.path.join(folder, "device")
        with open_stack(order, BLOCK_BYTES, device, transport, sup) as client:
            write_all(client, files)
            for name, data in files:
                assert client.read(name) == data
            stats = client.stats()
            if transport == "pipe":
                assert len(sup.pids) == len(stack_layers(order))
        total = sum(len(d) for _, d in files)
        blocks = sum(-(-len(d) // BLOCK_BYTES) for _, d in files)
        # The counts add up: every byte entered the cache and the file system, a block
        # is one record down, a file one header more; the driver wrote the device's size.
        assert stats["cache"][2] == stats["cache"][3] == total
        assert stats["fs"][2] == stats["fs"][3] == total
        assert stats["cache"][4] == 2 * len(files) + 2  # writes, sync, drop, reads
        assert stats["driver"][4] == 2 * blocks + len(files)
        assert stats["driver"][2] == os.path.getsize(device)
        assert list(stats) == list(stack_layers(order))


def test_compress_then_encrypt_writes_fewer_bytes_for_text(clean):
    files = stdlib_files(512 << 10)
    written = {}
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder, \
            Supervisor(names()) as sup:
        for order in ORDERS:
            device = os.path.join(folder, order)
            with open_stack(order, BLOCK_BYTES, device, "call", sup) as client:
                write_all(client, files)
            written[order] = os.path.getsize(device)
    total = sum(len(d) for _, d in files)
    records = sum(-(-len(d) // BLOCK_BYTES) for _, d in files)
    assert written["c-then-e"] < 0.5 * total
    # Sealed text does not compress: each block is stored raw, with its flag byte,
    # nonce and tag (29 bytes), and each file adds a header record of its own.
    assert written["e-then-c"] >= total + 29 * records
    assert written["c-then-e"] < written["e-then-c"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_aead_rejects_a_tampered_block_and_the_stack_goes_on(transport, clean):
    files = sample_files()[1:]
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder, \
            Supervisor(names()) as sup:
        device = os.path.join(folder, "device")
        with open_stack("c-then-e", BLOCK_BYTES, device, transport, sup) as client:
            write_all(client, files)
            # The first record is the first file's first block: past its 12-byte
            # nonce lies ciphertext. Flip one bit of it on the device.
            with open(device, "r+b") as disk:
                disk.seek(20)
                byte = disk.read(1)[0]
                disk.seek(20)
                disk.write(bytes([byte ^ 1]))
            if transport == "call":
                with pytest.raises(InvalidTag):
                    client.read(files[0][0])
            else:
                with pytest.raises(LayerError, match="aead: InvalidTag"):
                    client.read(files[0][0])
            for name, data in files[1:]:  # the servers survive a failed request
                assert client.read(name) == data


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_missing_file_is_an_error_from_the_file_system(transport, clean):
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder, \
            Supervisor(names()) as sup, \
            open_stack("e-then-c", BLOCK_BYTES, os.path.join(folder, "d"), transport,
                       sup) as client:
        if transport == "call":
            with pytest.raises(FileNotFoundError):
                client.read("nowhere.py")
        else:
            with pytest.raises(LayerError, match=r"fs: FileNotFoundError: nowhere\.py"):
                client.read("nowhere.py")


def test_a_failure_midway_leaves_nothing_behind(clean):
    with pytest.raises(RuntimeError, match="midway"), \
            tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as folder, \
            Supervisor(names()) as sup, \
            open_stack("c-then-e", BLOCK_BYTES, os.path.join(folder, "d"), "pipe",
                       sup) as client:
        client.write("a.py", b"x" * 40000)
        assert len(sup.pids) == 5
        raise RuntimeError("midway")


def test_frames_larger_than_a_pipe_cross_intact(clean):
    message = os.urandom(3 << 20)  # far beyond the 64 KiB pipe buffer
    with Supervisor(names()) as sup:
        channel = sup.start(FramedPipe(), 0, lambda: lambda request: request[::-1])
        assert channel.request(message) == message[::-1]
        assert channel.request(b"w") == b"w"  # the buffer grew; small frames still fit


def test_stdlib_input_is_whole_files_in_a_fixed_order():
    files = stdlib_files(256 << 10)
    assert files == stdlib_files(256 << 10)
    assert 0 < sum(len(d) for _, d in files) <= 256 << 10
    for name, data in files[:5]:
        assert (STDLIB / name).read_bytes() == data


@pytest.mark.parametrize("order", ORDERS)
def test_probe_in_a_worker_reads_back_every_byte(order, clean):
    cases = EXPERIMENT.plan(EXPERIMENT.params_type(transports=("pipe",), modes=(order,),
                                             file_bytes=128 << 10)).runnable
    found = {m: r["values"][0] for m, r in run_worker([asdict(c) for c in cases]).items()}
    assert set(found) == set(metrics(order))
    assert found["intact"] == 1.0
    assert found["cache_bytes_ratio"] == found["fs_bytes_ratio"] == 1.0
    assert found["driver_bytes_ratio"] == pytest.approx(found["bytes_ratio"])
    if order == "c-then-e":  # text shrinks before it is sealed
        assert found["bytes_ratio"] < 0.5
        assert found["aead_bytes_ratio"] < 0.5 < found["zlib_bytes_ratio"]
    else:  # ciphertext does not shrink: input, plus nonce, tag and flag per record
        assert 1.0 < found["bytes_ratio"] < 1.05
        assert found["zlib_bytes_ratio"] > found["aead_bytes_ratio"] > 1.0
    assert found["pred_ns_per_mib"] == pytest.approx(
        found["pred_write_ns_per_mib"] + found["pred_read_ns_per_mib"])


def test_plan_defaults_and_bad_input():
    plan = EXPERIMENT.plan(EXPERIMENT.params_type())
    keys = {(c.transport, c.param("order"), c.k) for c in plan.runnable}
    assert keys == {(t, o, 5) for t in TRANSPORTS for o in ORDERS}
    assert len(plan.runnable) == sum(len(metrics(o)) for o in ORDERS) * 2
    plain = EXPERIMENT.plan(EXPERIMENT.params_type(transports=("call",), modes=("plain",)))
    assert {c.k for c in plain.runnable} == {3}
    assert not any(c.metric.startswith(("zlib", "aead")) for c in plain.runnable)
    for table, match in (({"transports": ["shm"]}, "call and pipe, not 'shm'"),
                         ({"modes": ["sideways"]}, "unknown ordering 'sideways'"),
                         ({"file_bytes": 1000}, "file_bytes: use 0")):
        params = EXPERIMENT.params_type.from_table("experiments.layers", table)
        with pytest.raises(ValueError, match=match):
            EXPERIMENT.plan(params)


def synthetic(values: dict[tuple[str, str, str], float], workers: int = 4) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(7)
    for (transport, order, metric), value in values.items():
        for worker in range(workers):
            noise = 1 + rng.uniform(-0.01, 0.01) if metric.endswith("ns_per_mib") else 1
            rows.append({"experiment": "layers", "transport": transport, "order": order,
                         "metric": metric, "value": value * noise, "worker": worker, "k": 5})
    return pd.DataFrame(rows)


def test_model_recovers_the_ipc_cost_from_synthetic_samples():
    known = {}
    for order, (call, pipe) in {"c-then-e": (30e6, 50e6), "e-then-c": (20e6, 44e6)}.items():
        for transport, total in (("call", call), ("pipe", pipe)):
            known |= {(transport, order, "total_ns_per_mib"): total,
                      (transport, order, "pred_ns_per_mib"): 25e6,
                      (transport, order, "bytes_ratio"): 0.3 if order == "c-then-e" else 1.01,
                      (transport, order, "intact"): 1.0,
                      (transport, order, "requests_per_mib"): 1000.0}
    model = {(m.parameter, m.transport, m.variant): m
             for m in EXPERIMENT.model(synthetic(known))}
    ipc = model["layers_ipc_ns_per_mib", "pipe", "c-then-e"]
    assert ipc.value == pytest.approx(20e6, rel=0.02)
    assert ipc.ci_low <= ipc.value <= ipc.ci_high
    assert model["layers_ipc_ns_per_request", "pipe", "e-then-c"].value == pytest.approx(
        24e3, rel=0.02)
    assert model["layers_bytes_ratio", "call", "e-then-c"].value == 1.01
    assert model["layers_intact", "pipe", "c-then-e"].value == 1.0
    assert ("layers_ipc_ns_per_mib", "call", "c-then-e") not in model
    sections = EXPERIMENT.report(pd.DataFrame(), list(model.values()), {}, [])
    assert len(sections[0].rows) == 4 and all(r[-1] == "yes" for r in sections[0].rows)
