"""The CLI's roster commands: `peer devices` (list, revoke) and `peer key rotate`.

Same rules as `peer.cli`: build objects, call one library function, print.
"""

from __future__ import annotations

import argparse
import datetime
from typing import TYPE_CHECKING, Any

from peer.cli import render
from peer.cli.basics import printable
from peer.cli.common import command, open_node, print_json

if TYPE_CHECKING:
    from peer.roster import Device, Roster


def register(commands: Any) -> None:
    devices = commands.add_parser("devices", help="your devices: the roster")
    devices.add_argument("--json", action="store_true", help="machine-readable output")
    devices.set_defaults(handler=cmd_devices_list)
    actions = devices.add_subparsers(title="devices commands", metavar="ACTION")
    command(actions, "list", cmd_devices_list, "every device of the roster")
    revoke = command(actions, "revoke", cmd_devices_revoke, "revoke a device on all devices")
    revoke.add_argument("device", help="its name or node id")
    revoke.add_argument("--reason", default="", help="why (shown by `peer devices`)")


async def cmd_devices_list(args: argparse.Namespace) -> int:
    from peer import devices

    async with open_node(args) as node:
        await devices.ensure_card(node)
        roster = await devices.roster(node)
    rows = [_device_json(roster, d) for d in _ordered(roster)]
    if args.json:
        key_id = roster.key_id.hex() if roster.key_id else None
        print_json(
            {
                "devices": rows,
                "key_id": key_id,
                "needs_rotation": roster.needs_rotation,
                "refused_events": roster.refused,  # by nodes that are not members
                "ignored_events": roster.ignored,  # by revoked nodes, after revocation
            }
        )
        return 0
    for row in rows:
        revoked = (
            f"  REVOKED by {row['revoked_by']} at {row['revoked_at']}" if row["revoked"] else ""
        )
        reason = f" ({row['reason']})" if row["reason"] else ""
        print(
            f"{row['name'] or '-'}  {row['node_id']}  {row['role']}  "
            f"added by {row['added_by']} at {row['added_at']}{revoked}{reason}"
        )
    return 0


async def cmd_devices_revoke(args: argparse.Namespace) -> int:
    from peer import devices

    async with open_node(args) as node:
        await devices.ensure_card(node)
        device, key = await devices.revoke(node, args.device, args.reason)
        roster = await devices.roster(node)
    row = _device_json(roster, device)
    if args.json:
        print_json({"revoked": row, "key_id": key.key_id_text if key else None})
    else:
        print(f"revoked {row['name'] or row['node_id']}; every device that syncs unpins it")
        if key is not None:
            print(f"new sync key {key.key_id_text}: the revoked device cannot read what follows")
        else:
            print("this node holds no sync key: the next device that does rotates it")
    return 0


async def cmd_key_rotate(args: argparse.Namespace) -> int:
    from peer import devices

    async with open_node(args) as node:
        await devices.ensure_card(node)
        key = await devices.rotate(node)
        held = (await node.status()).keyring
    if args.json:
        print_json({"key_id": key.key_id_text, "keyring": held})
    else:
        print(f"new sync key {key.key_id_text}; {held} older key(s) kept to read old records")
    return 0


def _ordered(roster: Roster) -> list[Device]:
    return sorted(roster.devices.values(), key=lambda d: (d.added_at, d.node_id))


def _device_json(roster: Roster, device: Device) -> dict[str, Any]:
    from peer.identity import format_node_id

    def who(node_id: bytes) -> str:
        known = roster.devices.get(node_id)
        return render.node_name(known.name) if known and known.name else format_node_id(node_id)

    revoked = device.node_id in roster.revoked
    return {
        "name": render.node_name(device.name),
        "node_id": format_node_id(device.node_id),
        "role": device.role,
        "added_by": who(device.added_by),
        "added_at": _when(device.added_at),
        "address": printable(device.address),
        "revoked": revoked,
        "revoked_by": who(device.revoked_by) if device.revoked_by else None,
        "revoked_at": _when(device.revoked_at) if revoked else None,
        "reason": printable(device.reason),
    }


def _when(timestamp: int) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp / 1e9, datetime.UTC)
    return moment.isoformat(timespec="seconds")
