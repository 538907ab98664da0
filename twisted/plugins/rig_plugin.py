"""The ``twistd rig`` plugin: a lazy pointer at :mod:`rig.tap`, nothing else.

No ``rig`` import here: twistd imports every plugin file on every start.
"""
from twisted.application.service import ServiceMaker

rig = ServiceMaker(
    "txrig", "rig.tap", "Reactive Interaction Gateway: events to frontends", "rig"
)
