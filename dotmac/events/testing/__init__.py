"""Test helpers users import in their own tests: the conformance suite and wait_until."""

from dotmac.events.testing.conformance import (
    BusFactory,
    Capabilities,
    ConformanceSuite,
    wait_until,
)

__all__ = ["BusFactory", "Capabilities", "ConformanceSuite", "wait_until"]
