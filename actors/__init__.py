"""The actors of a chat room: tokens, the message store and one session per client.

Each actor is a ``pykka.ThreadingActor`` with its own thread and mailbox. Other
actors and the web layer talk to it only through its typed proxy, so every
method call on a proxy is a message in the actor's mailbox.
"""

import logging

logging.getLogger("chatroom").addHandler(logging.NullHandler())
