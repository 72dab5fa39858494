"""Deployments (a compiled model on a booked device) and their live I/O."""

from .hub import DeviceHub, EndReason, OutputSubscription
from .registry import Deployments

__all__ = ["Deployments", "DeviceHub", "EndReason", "OutputSubscription"]
