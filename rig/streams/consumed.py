"""What every event source does with an event it consumed: count it and publish it."""
from rig.tracing.tracer import CONSUMER


def publish_consumed(hub, tracing, event, source, destination, **attributes):
    """Publish *event* consumed from *source* (``redis``, ``nats``) at *destination*
    (a stream or subject); with an exporter, within a consumer span that is a child
    of the event's ``traceparent``. The event goes on with its own trace attributes,
    as RIG delivers them."""
    hub.stats.received[source] += 1
    if not tracing.exporting:
        hub.publish(event)
        return
    document = event.document
    trace = tracing.start(
        f"{destination} process", document.get("traceparent"), document.get("tracestate"),
        kind=CONSUMER, attributes={
            "messaging.system": source, "messaging.destination.name": destination,
            "messaging.message.id": event.id, "messaging.operation.type": "process",
            "cloudevents.event_type": event.type, **attributes})
    hub.publish(event)
    trace.end()
