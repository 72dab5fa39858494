"""Deployments: put a compiled model on a booked device, show it, clear it, reset its states."""

from __future__ import annotations

from fastapi import APIRouter

from specklab.schemas.api import ErrorBody
from specklab.schemas.deploy import Deployment, DeploymentRequest, NeuronStates

from .deps import CurrentUser, DeploymentsDep, WriterUser

router = APIRouter(prefix="/v1/devices/{device_id}", tags=["deployments"])


@router.post("/deployment", status_code=201, response_model=Deployment)
async def deploy(
    device_id: str, request: DeploymentRequest, user: WriterUser, deployments: DeploymentsDep
) -> Deployment:
    return await deployments.deploy(user, device_id, request)


@router.get("/deployment", response_model=Deployment)
def get_deployment(device_id: str, user: CurrentUser, deployments: DeploymentsDep) -> Deployment:
    """What runs on the device: its owner's, or anyone's for admins and observers."""
    return deployments.hub(user, device_id, lab_activity=True).deployment


@router.get(
    "/deployment/layers/{layer}/states",
    response_model=NeuronStates,
    responses={404: {"model": ErrorBody}},
)
async def neuron_states(
    device_id: str, layer: int, user: CurrentUser, deployments: DeploymentsDep
) -> NeuronStates:
    """A deployed model layer's membrane potentials, read from the device now (its owner or
    an admin)."""
    return await deployments.hub(user, device_id).read_states(layer)


@router.delete("/deployment", status_code=204)
async def remove_deployment(device_id: str, user: WriterUser, deployments: DeploymentsDep) -> None:
    await deployments.remove(user, device_id)


@router.post("/reset-states", status_code=204)
async def reset_states(device_id: str, user: WriterUser, deployments: DeploymentsDep) -> None:
    hub = await deployments.hub_for_use(user, device_id)
    await hub.reset_states()
