"""Devices: the list with status, one device, and the device types the guide names."""

from __future__ import annotations

from fastapi import APIRouter

from specklab.schemas.api import ErrorBody
from specklab.schemas.devices import DeviceList, DevicePublic, DeviceType

from ..booking.devices_view import lab_device_list
from ..chips import DEVICE_TYPES, SUPPORTED_DEVICES
from ..devices.errors import DeviceNotFound
from ..devices.suggest import unknown_device
from ..devices.views import devices_public, samna_info
from .deps import DatabaseDep, ManagerDep, PolicyDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["devices"])


@router.get("/devices", response_model=DeviceList)
async def list_devices(
    manager: ManagerDep, db: DatabaseDep, settings: SettingsDep, policy: PolicyDep
) -> DeviceList:
    """This host's devices, then those other hosts of the lab serve (each with its ``url``)."""
    devices = await devices_public(manager, manager.states())
    devices = await lab_device_list(db, settings, policy, devices)
    return DeviceList(devices=devices, samna=samna_info(manager))


@router.get(
    "/devices/{device_id}", response_model=DevicePublic, responses={404: {"model": ErrorBody}}
)
async def get_device(
    device_id: str, manager: ManagerDep, db: DatabaseDep, settings: SettingsDep, policy: PolicyDep
) -> DevicePublic:
    try:
        state = manager.state(device_id)
    except DeviceNotFound:
        remote = await lab_device_list(db, settings, policy, [])
        found = next((device for device in remote if device.id == device_id), None)
        if found is None:
            known = [s.description.id for s in manager.states()] + [d.id for d in remote]
            raise unknown_device(device_id, known) from None
        return found
    [local] = await devices_public(manager, [state])
    return local.model_copy(update={"url": settings.effective_public_url})


@router.get("/device-types", response_model=list[DeviceType])
async def device_types() -> list[DeviceType]:
    return [
        DeviceType(
            type=name,
            samna_name=samna_name,
            supported=name in SUPPORTED_DEVICES,
            chip=SUPPORTED_DEVICES.get(name),
        )
        for name, samna_name in DEVICE_TYPES.items()
    ]
