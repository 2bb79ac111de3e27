"""A worker process's own Prometheus metrics, served by `leukemia worker --metrics-port PORT`.

The service's metrics (queues, jobs, durations, workers) come from the rows, at the web's
/metrics. These are what only the process knows: the jobs it ran and how they ended, the epochs
it trained, the job it runs now (its images per second, the GPU it holds), the GPUs it may use
(NVML, through nvidia-ml-py: utilisation, memory, temperature, power; no such family at all without
NVML's library, a driver or a device), and its CPU, memory and open files (prometheus_client's
process collector). Counters live in this process, so the exporter needs --concurrency 1 (a pool
thread: jobs run in this process, not in pool children). Like /metrics, it answers only the bearer
METRICS_TOKEN, on WORKER_METRICS_ADDRESS (loopback unless set)."""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from core.common.errors import UserInputError

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
JOBS_RUN = Counter(
    "leukemia_worker_jobs", "Jobs this worker process ran, by kind and outcome.", ["kind", "outcome"], registry=REGISTRY
)
EPOCHS = Counter(
    "leukemia_worker_epochs",
    "Training epochs this worker process completed (a resume's replayed ones not counted).",
    registry=REGISTRY,
)
CURRENT_JOB = Gauge("leukemia_worker_current_job_id", "Id of the job this worker runs now; 0 when idle.", registry=REGISTRY)
JOB_IMAGES_PER_SECOND = Gauge(
    "leukemia_worker_job_images_per_second",
    "Images per second of the job this worker runs now (its latest report); 0 when idle.",
    registry=REGISTRY,
)
JOB_GPU = Gauge(
    "leukemia_worker_job_gpu",
    "1 for the GPU (NVML index) the running job holds; absent when idle or on the CPU.",
    ["gpu"],
    registry=REGISTRY,
)
log = logging.getLogger("leukemia.worker")
_worker_gpu: str | None = None  # `leukemia worker --gpu N`: the one device this worker uses (configure)
_nvml_started = False


@dataclass(frozen=True)
class GpuReading:
    """One device's NVML reading; a value the device does not report is None."""

    index: int  # NVML's, the PCI bus order (the worker sets CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA's too)
    name: str
    uuid: str
    utilization: float | None  # busy fraction of the last sample period, 0..1
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None


def read_gpus(indices: list[int] | None = None) -> list[GpuReading]:
    """The NVML readings of these devices (every device when None); [] when there is no NVML library,
    no driver or no device: a worker without a GPU exports no GPU family, and is no error."""
    import pynvml

    global _nvml_started
    try:
        if not _nvml_started:  # once per process (it can take a while); kept until the process ends
            pynvml.nvmlInit()
            _nvml_started = True
        count = pynvml.nvmlDeviceGetCount()
        return [_read_device(pynvml, index) for index in (range(count) if indices is None else indices) if 0 <= index < count]
    except pynvml.NVMLError as error:
        if _nvml_started:  # a device gone or the driver failing: this scrape shows no GPU, and says why
            log.warning("GPU metrics: NVML: %s", error)
        return []


def _read_device(pynvml: Any, index: int) -> GpuReading:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def value(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except pynvml.NVMLError:  # NotSupported on this device, for instance
            return None

    memory = value(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    utilization = value(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
    power_mw = value(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    return GpuReading(
        index=index,
        name=str(value(lambda: pynvml.nvmlDeviceGetName(handle)) or ""),
        uuid=str(value(lambda: pynvml.nvmlDeviceGetUUID(handle)) or ""),
        utilization=utilization,
        memory_used_bytes=None if memory is None else int(memory.used),
        memory_total_bytes=None if memory is None else int(memory.total),
        temperature_celsius=value(lambda: float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))),
        power_watts=None if power_mw is None else power_mw / 1000.0,
    )


GPU_FAMILIES = (  # name, help, the reading's field
    ("leukemia_gpu_utilization_ratio", "Fraction of the last sample period the GPU was busy (NVML).", "utilization"),
    ("leukemia_gpu_memory_used_bytes", "GPU memory in use, by every process.", "memory_used_bytes"),
    ("leukemia_gpu_memory_total_bytes", "GPU memory in all.", "memory_total_bytes"),
    ("leukemia_gpu_temperature_celsius", "GPU core temperature.", "temperature_celsius"),
    ("leukemia_gpu_power_watts", "GPU power draw.", "power_watts"),
)


class GpuCollector(Collector):
    """The GPUs' readings at each scrape, from `read` (read_gpus for this worker's devices): one sample per
    device and value it reported, labelled by its index; leukemia_gpu_info carries name and UUID."""

    def __init__(self, read: Callable[[], list[GpuReading]]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []  # nothing read at registration: the families appear only where there are GPUs

    def collect(self) -> Iterator[Metric]:
        readings = self.read()
        if not readings:
            return
        info = GaugeMetricFamily(
            "leukemia_gpu_info", "A GPU this worker may use: 1, with its name and UUID.", labels=["gpu", "name", "uuid"]
        )
        for reading in readings:
            info.add_metric([str(reading.index), reading.name, reading.uuid], 1)
        yield info
        for name, documentation, attribute in GPU_FAMILIES:
            family = GaugeMetricFamily(name, documentation, labels=["gpu"])
            for reading in readings:
                if getattr(reading, attribute) is not None:
                    family.add_metric([str(reading.index)], getattr(reading, attribute))
            yield family


def this_workers_gpus() -> list[GpuReading]:
    """The devices this worker may use: its --gpu, else every device of the host."""
    return read_gpus(None if _worker_gpu is None else [int(_worker_gpu)])


REGISTRY.register(GpuCollector(this_workers_gpus))


def configure(gpu: str | None) -> None:
    """The worker's --gpu (None: it may use every device)."""
    global _worker_gpu
    _worker_gpu = gpu.strip() if gpu is not None else None


def job_gpu(device: str) -> str | None:
    """The GPU (NVML index) a job with this `device` parameter holds on this worker, None on the CPU."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return None
    if _worker_gpu is not None:  # CUDA_VISIBLE_DEVICES is that one device
        return _worker_gpu
    return device.partition(":")[2] or "0"


def job_started(job_id: int, device: str) -> None:
    CURRENT_JOB.set(job_id)
    gpu = job_gpu(device)
    if gpu is not None:
        JOB_GPU.labels(gpu).set(1)


def job_ended() -> None:
    CURRENT_JOB.set(0)
    JOB_IMAGES_PER_SECOND.set(0)
    JOB_GPU.clear()


class _QuietHandler(WSGIRequestHandler):
    """No access line per scrape on the worker's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def token_required(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI app behind a bearer-token check: 401 without the token."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sent = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(sent, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"authorization: send 'Authorization: Bearer <METRICS_TOKEN>'\n"]
        return app(environ, start_response)

    return guarded


def start_exporter(port: int, token: str, host: str = "127.0.0.1") -> ThreadingWSGIServer:
    """Serve REGISTRY at http://host:port/metrics from a daemon thread; returns the server (to shut down)."""
    if not token:
        raise UserInputError(
            "--metrics-port: set METRICS_TOKEN (or METRICS_TOKEN_FILE): the exporter answers only that token",
            field="metrics_port",
        )
    try:
        server = make_server(
            host, port, token_required(make_wsgi_app(REGISTRY), token), ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as error:
        raise UserInputError(f"--metrics-port: cannot listen on {host}:{port}: {error.strerror}", field="metrics_port") from None
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    return server
