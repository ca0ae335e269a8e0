"""The OpenAPI 3.1 document of the admin API (served at /api/openapi.json).

Written by hand next to the handlers rather than generated: the schemas mirror the Control's dataclasses
(casarray.engine.control) field for field, and a unit test checks both that the document is valid and
that every route the server answers is described here.
"""

from __future__ import annotations

from typing import Any

from casarray.admin.views import OPERATOR_STATES

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_STR = {"type": "string"}
# Who set an operator state, why and when (kept across restarts; docs/operations.md).
_OPERATOR_NOTE: dict[str, Any] = {
    "operator_reason": {**_STR, "description": "Why the operator state was set ('' if nobody said)."},
    "operator_by": {**_STR, "description": "Who set it and from where ('' for a state nobody set)."},
    "operator_since": {**_NUM, "description": "Epoch seconds since the state is in force (0: never set)."},
}
_NOTE_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "reason": {**_STR, "description": "Why, e.g. 'CU14'."},
                    "by": {**_STR, "description": "Who (default 'api'); the caller's address is added."},
                },
            }
        }
    },
}

_SCHEMAS: dict[str, Any] = {
    "MemberView": {
        "type": "object",
        "description": "One server inside one service's pool.",
        "required": [
            "server",
            "service",
            "health",
            "code",
            "reason",
            "check_ms",
            "since",
            "operator",
            "available",
            "requests",
            "state",
        ],
        "properties": {
            "server": _STR,
            "service": _STR,
            "health": {"enum": ["init", "up", "down"], "description": "Last health verdict."},
            "code": {**_STR, "description": "Last check result (L7OK, L7STS, L4CON, …); empty before one."},
            "reason": {**_STR, "description": "Last check reason, e.g. 'HTTP 503'."},
            "check_ms": {**_NUM, "description": "Duration of the last check in milliseconds."},
            "since": {**_NUM, "description": "Epoch seconds of the last health change (0: none yet)."},
            "operator": {"enum": list(OPERATOR_STATES), "description": "State set on this member."},
            "available": {"type": "boolean", "description": "Takes new traffic now."},
            "requests": {**_INT, "description": "L7 requests sent to this member (0 in l4)."},
            **_OPERATOR_NOTE,
            "state": {
                "enum": ["init", "up", "down", *OPERATOR_STATES[1:]],
                "description": "One word for display: the operator state that applies (the server's or "
                "the member's, the stronger) when not ready, else the health.",
            },
        },
    },
    "ServerView": {
        "type": "object",
        "required": [
            "name",
            "address",
            "port",
            "operator",
            "active",
            "peak",
            "total",
            "bytes_in",
            "bytes_out",
            "connect_errors",
            "members",
        ],
        "properties": {
            "name": _STR,
            "address": _STR,
            "port": _INT,
            "operator": {"enum": list(OPERATOR_STATES), "description": "State set on the whole server."},
            "active": {**_INT, "description": "Open connections (scur)."},
            "peak": {**_INT, "description": "Most open at once (smax)."},
            "total": {**_INT, "description": "Connections made (stot)."},
            "bytes_in": {**_INT, "description": "Client to server bytes (bin), counted at close."},
            "bytes_out": {**_INT, "description": "Server to client bytes (bout), counted at close."},
            "connect_errors": {**_INT, "description": "Failed connects (econ)."},
            "members": {"type": "object", "additionalProperties": _ref("MemberView")},
            **_OPERATOR_NOTE,
        },
    },
    "Snapshot": {
        "type": "object",
        "required": [
            "mode",
            "namespace",
            "services",
            "servers",
            "clients",
            "clients_total",
            "refused",
            "requests",
            "queue",
            "tls_handshake_failures",
            "reloads",
            "workers",
            "started",
            "time",
            "https_listener",
            "pools",
            "upstream_releases",
        ],
        "properties": {
            "mode": {"enum": ["l4", "l7"]},
            "namespace": _STR,
            "services": {"type": "array", "items": _STR},
            "servers": {"type": "array", "items": _ref("ServerView")},
            "clients": {**_INT, "description": "Open client connections."},
            "clients_total": {**_INT, "description": "Client connections accepted."},
            "refused": {**_INT, "description": "Connections or requests the balancer answered or closed."},
            "requests": {
                "type": "object",
                "description": "L7 requests by service, then by status class ('2xx', …).",
                "additionalProperties": {"type": "object", "additionalProperties": _INT},
            },
            "queue": {**_INT, "description": "Clients waiting for a slot (l4)."},
            "tls_handshake_failures": _INT,
            "upstream_releases": {
                **_INT,
                "description": "l7: idle upstream connections closed after timeouts.upstream_release.",
            },
            "reloads": {**_INT, "description": "Reloads that took effect."},
            "workers": _INT,
            "started": {**_NUM, "description": "Epoch seconds."},
            "time": {**_NUM, "description": "When this snapshot was taken (epoch seconds)."},
            "https_listener": {
                **_STR,
                "description": "address:port of the HTTPS (l4: pass-through) listener, IPv6 in brackets.",
            },
            "pools": {
                "type": "object",
                "description": "Each pool a listener picks servers from (l7: one per service; l4: 'l4'; "
                "one per mail port, 'imap:993'), with the services a server must have available to be in it.",
                "additionalProperties": {"type": "array", "items": _STR},
            },
        },
    },
    "Event": {
        "type": "object",
        "description": "One state change: a health transition, an operator action or a reload.",
        "required": ["time", "server", "service", "old", "new", "code", "reason"],
        "properties": {
            "time": {**_NUM, "description": "Epoch seconds."},
            "server": _STR,
            "service": {**_STR, "description": "Empty for a whole server (or a reload)."},
            "old": _STR,
            "new": _STR,
            "code": {**_STR, "description": "Check result code, or 'operator' / 'reload'."},
            "reason": _STR,
        },
    },
    "Events": {
        "type": "object",
        "required": ["events", "time"],
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "time": {**_NUM, "description": "Pass it as ?since= next time to get only newer events."},
        },
    },
    "OperatorChange": {
        "type": "object",
        "required": ["server", "service", "state", "outcome"],
        "properties": {
            "server": _STR,
            "service": {"type": ["string", "null"], "description": "null: the whole server."},
            "state": {"enum": list(OPERATOR_STATES)},
            "reason": {**_STR, "description": "Why, as recorded (one line, at most 200 characters)."},
            "by": {**_STR, "description": "Who, as recorded: the caller's `by` (default 'api') and address."},
            "outcome": _STR,
            "peers": {
                "type": "array",
                "items": _ref("PeerAnswer"),
                "description": "With peers: in the config: each other node's answer (the change is pushed "
                "to them before this answer).",
            },
        },
    },
    "PeerAnswer": {
        "type": "object",
        "required": ["node", "ok", "outcome"],
        "properties": {
            "node": {**_STR, "description": "The node's admin URL, as peers.nodes lists it."},
            "ok": {"type": "boolean", "description": "The change is in force on that node."},
            "outcome": {
                **_STR,
                "description": "What it did ('MB2: ready -> drain by …'), or why not ('not taken: does not "
                "answer (Connection refused)', 'not taken: refused: 401 wrong token …').",
            },
        },
    },
    "OperatorSetting": {
        "type": "object",
        "required": ["server", "service", "state"],
        "properties": {
            "server": _STR,
            "service": {"type": ["string", "null"], "description": "null: the whole server."},
            "state": {"enum": list(OPERATOR_STATES)},
            "reason": _STR,
            "by": _STR,
            "since": {**_NUM, "description": "Epoch seconds: when this state began."},
            "changed": {
                **_NUM,
                "description": "Epoch seconds: when this setting was last written, its version (newest "
                "wins between nodes); default: since.",
            },
        },
    },
    "OperatorStates": {
        "type": "object",
        "description": "The document of the state file (<config>.state.json), as nodes exchange it.",
        "required": ["version", "states"],
        "properties": {
            "version": {"const": 1},
            "states": {"type": "array", "items": _ref("OperatorSetting")},
            "node": {**_STR, "description": "POST: the sending node's admin URL (for the log)."},
        },
    },
    "Adoptions": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["server", "service", "state", "result", "holds", "outcome"],
                    "properties": {
                        "server": _STR,
                        "service": {"type": ["string", "null"]},
                        "state": {"enum": list(OPERATOR_STATES)},
                        "result": {
                            "enum": ["taken", "same", "kept", "unknown"],
                            "description": "taken: newer, in force now; same: held already; kept: this "
                            "node holds a newer one; unknown: no such server or service here.",
                        },
                        "holds": {"type": "boolean", "description": "The setting is in force here now."},
                        "outcome": _STR,
                    },
                },
            }
        },
    },
    "Reload": {"type": "object", "required": ["outcome"], "properties": {"outcome": _STR}},
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {**_STR, "description": "What is wrong, naming the unknown server, service or state."},
            "expected": {"type": "array", "items": _STR, "description": "The values that are known."},
            "problems": {"type": "array", "items": _STR, "description": "Reload: one line per problem."},
        },
    },
}

_SERVER = {"name": "server", "in": "path", "required": True, "schema": _STR, "description": "e.g. MB1"}
_SERVICE = {
    "name": "service",
    "in": "path",
    "required": True,
    "schema": _STR,
    "description": "A configured service: owa, ecp, ews, mapi, rpc, oab, eas, autodiscover, powershell.",
}
_STATE = {"name": "state", "in": "path", "required": True, "schema": {"enum": list(OPERATOR_STATES)}}
_CHANGE_ERRORS = {
    "400": _error("Unknown state."),
    "401": _error("Token missing or wrong."),
    "403": _error("Changes refused: no token file while listening beyond loopback, or a cross-origin call."),
    "404": _error("Unknown server or service."),
}
_READ_ERRORS = {
    "401": _error("Token missing or wrong (reads need it when admin.listen is not loopback)."),
    "403": _error("Refused: see the message."),
}
_OPERATOR_TEXT = (
    "ready: takes new traffic. drain: no new connections or requests, open ones finish. "
    "maint: out now, its open connections are closed. Survives a reload."
)


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "casarray admin API",
            "version": "1",
            "description": "State and counters of the running balancer, operator states and reload. "
            "Reads need no token on a loopback address; changes need the bearer token from "
            "admin.token_file (see docs/operations.md).",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The content of admin.token_file (surrounding white space stripped).",
                }
            },
        },
        "paths": {
            "/api/status": {
                "get": {
                    "summary": "Servers × services with health and operator state, and the counters.",
                    "operationId": "status",
                    "security": [{}, {"token": []}],
                    "responses": {"200": _json(_ref("Snapshot"), "The snapshot."), **_READ_ERRORS},
                }
            },
            "/api/events": {
                "get": {
                    "summary": "State changes (health transitions, operator actions, reloads), oldest first.",
                    "operationId": "events",
                    "security": [{}, {"token": []}],
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "default": 0},
                            "description": "Only events newer than this (epoch seconds).",
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Events"), "The events (a bounded history)."),
                        "400": _error("since is not a number."),
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/stream": {
                "get": {
                    "summary": "Server-sent events: 'snapshot' (a Snapshot) every second, 'event' for each "
                    "new Event.",
                    "operationId": "stream",
                    "security": [{}, {"token": []}],
                    "responses": {
                        "200": {
                            "description": "An endless text/event-stream.",
                            "content": {"text/event-stream": {"schema": _STR}},
                        },
                        **_READ_ERRORS,
                    },
                }
            },
            "/api/servers/{server}/{state}": {
                "post": {
                    "summary": "Set a whole server's operator state.",
                    "description": _OPERATOR_TEXT,
                    "operationId": "setServer",
                    "security": [{"token": []}],
                    "parameters": [_SERVER, _STATE],
                    "requestBody": _NOTE_BODY,
                    "responses": {"200": _json(_ref("OperatorChange"), "Done."), **_CHANGE_ERRORS},
                }
            },
            "/api/servers/{server}/services/{service}/{state}": {
                "post": {
                    "summary": "Set one member's (server, service) operator state.",
                    "description": _OPERATOR_TEXT,
                    "operationId": "setMember",
                    "security": [{"token": []}],
                    "parameters": [_SERVER, _SERVICE, _STATE],
                    "requestBody": _NOTE_BODY,
                    "responses": {"200": _json(_ref("OperatorChange"), "Done."), **_CHANGE_ERRORS},
                }
            },
            "/api/reload": {
                "post": {
                    "summary": "Re-read the config file; the running config keeps serving if it is refused.",
                    "operationId": "reload",
                    "security": [{"token": []}],
                    "responses": {
                        "200": _json(_ref("Reload"), "The new config serves."),
                        "409": _error(
                            "The config file was refused (`problems`: one line each, naming file and "
                            "line); the old one serves."
                        ),
                        "500": _error("The balancer failed while reloading (a fault, logged)."),
                        "401": _CHANGE_ERRORS["401"],
                        "403": _CHANGE_ERRORS["403"],
                    },
                }
            },
            "/api/peers/states": {
                "get": {
                    "summary": "Every operator setting this node holds, with its version: what the other "
                    "nodes (peers:) read at start and every peers.sync_interval.",
                    "operationId": "peerStates",
                    "security": [{}, {"token": []}],
                    "responses": {"200": _json(_ref("OperatorStates"), "The settings."), **_READ_ERRORS},
                },
                "post": {
                    "summary": "Settings written on another node: each newer one than this node holds is "
                    "applied and kept (newest wins); none is pushed on to other nodes.",
                    "operationId": "adoptStates",
                    "security": [{"token": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("OperatorStates")}},
                    },
                    "responses": {
                        "200": _json(_ref("Adoptions"), "What this node did with each setting."),
                        "400": _error("Not a state document."),
                        "401": _CHANGE_ERRORS["401"],
                        "403": _CHANGE_ERRORS["403"],
                    },
                },
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "operationId": "openapi",
                    "security": [{}, {"token": []}],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1."), **_READ_ERRORS},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text exposition (format 0.0.4) read from the snapshot at scrape time.",
                    "operationId": "metrics",
                    "security": [{}, {"token": []}],
                    "responses": {
                        "200": {"description": "Metrics.", "content": {"text/plain": {"schema": _STR}}},
                        **_READ_ERRORS,
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The dashboard: one self-contained HTML page (it holds no data itself).",
                    "operationId": "dashboard",
                    "security": [{}],
                    "responses": {
                        "200": {"description": "HTML.", "content": {"text/html": {"schema": _STR}}}
                    },
                }
            },
        },
    }
