"""Uploading and compiling models, against the real daemon."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

from specklab.client import Client, InvalidRequest, ModelDoesNotFit, NotFound, RemoteModel
from specklab.client._operations import Operations
from specklab.schemas import chipconfig
from specklab.schemas.arrays import lift_arrays
from specklab.schemas.chipconfig import ChipConfig
from tests.chip_configs import guide_network as guide_config

from .conftest import ALL_ONES_SHAPE, Account, all_ones_network

torch = pytest.importorskip("torch")


def test_compile_a_module_and_read_its_report(client: Client) -> None:
    model = client.compile(all_ones_network(), input_shape=ALL_ONES_SHAPE, name="ones")
    assert isinstance(model, RemoteModel)
    assert (model.name, model.format) == ("ones", "torch_export")
    assert model.report.ok and model.options.input_shape == ALL_ONES_SHAPE
    [layer] = model.report.layers
    assert (layer.kind, layer.output_shape) == ("conv2d", (4, 6, 6))
    table = model.report_table()
    assert "fits on speck2f" in table
    assert table.splitlines()[1].split()[:3] == ["LAYER", "KIND", "CORE"]
    assert "#0 Conv2d '0'" in table


def test_upload_files_and_bytes_list_show_configure_delete(
    client: Client, model_file: Path
) -> None:
    from_path = client.upload(model_file, options={"input_shape": ALL_ONES_SHAPE})
    assert from_path.name == "all_ones.pt2"
    from_bytes = client.upload(
        model_file.read_bytes(), options={"input_shape": ALL_ONES_SHAPE, "chip": "speck2e"}
    )
    assert from_bytes.report.chip == "speck2e"
    assert {from_path.id, from_bytes.id} <= {m.id for m in client.models()}
    assert client.model(from_path.id).info == from_path.info
    config = client.chip_config(from_path)
    assert isinstance(config, ChipConfig) and len(config.layers) == 1
    client.delete_model(from_path)
    with pytest.raises(NotFound):
        client.model(from_path.id)


def test_a_model_the_chip_cannot_hold_raises_with_the_report(client: Client) -> None:
    layers = [torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU())]
    too_deep = torch.nn.Sequential(*(layers * 10))
    with pytest.raises(ModelDoesNotFit) as raised:
        client.compile(too_deep, input_shape=(2, 8, 8))
    error = raised.value
    assert error.status == 422 and "9 cores" in error.message
    assert "too_many_layers" in [p.code for p in error.problems]
    assert error.report is not None and not error.report.ok
    assert len(error.report.layers) == 10


def test_unreadable_files_and_bad_options_are_refused(client: Client) -> None:
    with pytest.raises(InvalidRequest, match="garbage"):
        client.upload(b"garbage", options={"input_shape": ALL_ONES_SHAPE})
    # Options the schema refuses never leave the client.
    with pytest.raises(ValueError, match="spike_treshold"):
        client.compile(all_ones_network(), input_shape=ALL_ONES_SHAPE, spike_treshold=2.0)


def test_other_users_models_are_not_found(client: Client, streamer: Account, remote_model) -> None:
    with pytest.raises(NotFound):
        client.model(remote_model.id)


def test_compile_a_nir_graph(client: Client) -> None:
    nir = pytest.importorskip("nir")
    shape = (4, 6, 6)
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array(ALL_ONES_SHAPE)}),
        nir.Conv2d((8, 8), np.ones((4, 1, 3, 3)), 1, 0, 1, 1, np.zeros(4)),
        nir.IF(r=np.ones(shape), v_threshold=np.ones(shape)),
        nir.Output(output_type={"output": np.array(shape)}),
    )
    model = client.compile(graph, input_shape=ALL_ONES_SHAPE)
    assert (model.name, model.format) == ("model.nir", "nir")
    assert model.report.ok and [layer.output_shape for layer in model.report.layers] == [shape]


def test_upload_a_torchscript_file(client: Client) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(all_ones_network(), torch.zeros(1, *ALL_ONES_SHAPE)), buffer)
    model = client.upload(buffer.getvalue(), options={"input_shape": ALL_ONES_SHAPE})
    assert (model.name, model.format) == ("model.pt", "torchscript") and model.report.ok


def test_a_configuration_answer_is_parsed_by_the_configurations_own_json_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ChipConfig lifts its weight arrays out of the JSON text; a generic TypeAdapter would
    build one Python int per weight (about a second for the guide's network)."""
    document = guide_config(0).model_dump_json().encode()
    lifted: list[tuple[str, ...]] = []

    def lift(data: bytes, keys: tuple[str, ...]) -> object:
        lifted.append(keys)
        return lift_arrays(data, keys)

    monkeypatch.setattr(chipconfig, "lift_arrays", lift)
    operation = Operations("http://daemon.test").chip_config(7)
    call = next(operation)
    assert call.request.url.path == "/v1/models/7/config"
    with pytest.raises(StopIteration) as done:
        operation.send(httpx.Response(200, content=document, request=call.request))
    assert lifted == [("weights", "neurons_initial_value")]
    assert done.value.value.model_dump_json().encode() == document
