"""One conversation step: the engine, the conversation store in Redis, audit and drop-off stats."""
