"""`casarray announce`: the VIP is announced to the routers while this node's casarray is healthy.

BIRD (bird.conf from `casarray export bird`) speaks BGP but tracks no health; this room tells it when to
announce and when to withdraw.

bird.py     what is said to BIRD (birdc command lines) and how its answers read: pure
watcher.py  the loop: check casarray every interval, rise/fall (health/state.py), enable or disable
            BIRD's static protocol, one log line per transition; the asyncio shell
"""
