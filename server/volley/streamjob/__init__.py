"""``volley stream``: consume requests from a message broker, predict, publish the answers."""
