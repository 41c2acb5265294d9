"""Third-party MQTT formats -> canonical events: one module per ecosystem.

An adapter takes a message it subscribed to and returns zero or more canonical events
or rejections (-> DLQ); an empty list means "nothing to record" (a state report with no
news, a topic we deliberately ignore). Adapters keep a little memory (what they already
emitted per tracked object, the last state of a boolean) so one real-world event becomes
one canonical event, not one per update.
"""
