"""The results table (against goals and the seed system) and charts."""

from __future__ import annotations

from pathlib import Path

# Seed system (Django + Channels + Redis), measured on the same kind of machine.
SEED_FAN_OUT_S = {100: 0.33, 500: 1.5, 1_000: 3.0, 2_000: 5.8}
FAN_OUT_GOAL_MS = {1_000: 100, 10_000: 1_500}


def _row(scenario: str, measured: str, goal: str, seed: str, met: bool | None) -> list[str]:
    mark = "" if met is None else ("yes" if met else "NO")
    return [scenario, measured, goal, seed, mark]


def rows(r: dict) -> list[list[str]]:
    out = []
    for f in r.get("fan_out", []):
        n = f["subscribers"]
        goal = FAN_OUT_GOAL_MS.get(n)
        seed = f"{SEED_FAN_OUT_S[n]} s" if n in SEED_FAN_OUT_S else "-"
        out.append(
            _row(
                f"fan-out N={n:,} (POST → last socket)",
                f"{f['last_socket_ms']} ms, {f['received']:,}/{f['expected']:,} received",
                f"≤ {goal} ms" if goal else "-",
                seed,
                (f["last_socket_ms"] <= goal and f["received"] == f["expected"]) if goal else None,
            )
        )
    if b := r.get("big_fan_out"):
        out.append(
            _row(
                f"big fan-out {b['subscribers']:,} subs: commit",
                f"{b['commit_ms']} ms",
                "≤ 3000 ms",
                "not attempted",
                b["commit_ms"] <= 3000,
            )
        )
        out.append(
            _row(
                f"big fan-out: last of {b['connected']:,} sockets",
                f"{b['last_socket_ms']} ms, {b['received']:,} received",
                "≤ 5000 ms",
                "-",
                b["last_socket_ms"] is not None
                and b["last_socket_ms"] <= 5000
                and b["received"] == b["connected"],
            )
        )
    if h := r.get("head_of_line"):
        out.append(
            _row(
                "head-of-line: 1-subscriber POST → push, broadcast in flight",
                f"{h['single_push_p50_ms']} ms (runs {h['single_push_runs_ms']})",
                "≤ 50 ms",
                "-",
                h["single_push_p50_ms"] <= 50,
            )
        )
        out.append(
            _row(
                "head-of-line: the broadcast's commit",
                f"{h['broadcast_commit_p50_ms']} ms",
                "≤ 3000 ms",
                "-",
                h["broadcast_commit_p50_ms"] <= 3000,
            )
        )
    if w := r.get("idle_writer"):
        out.append(
            _row(
                "idle writer: POST / push p50 / p99 on another tag",
                f"{w['post_p50_ms']} / {w['post_p99_ms']} ms, push {w['push_p50_ms']} / "
                f"{w['push_p99_ms']} ms, {w['published_while_open']}/{w['posts']} "
                f"published while open, {w['errors']} errors; "
                f"counts {w['counts_p50_ms']} / {w['counts_p99_ms']} ms",
                "usual latency",
                "-",
                w["published_while_open"] == w["posts"],
            )
        )
    if pp := r.get("parallel"):
        out.append(
            _row(
                "parallel publishers (8 clients, own tag of 10 each)",
                f"{pp['notifications_per_s']:,}/s, {pp['deliveries_per_s']:,} deliveries/s; "
                f"CPU server {pp['server_cpu_cores']}, PostgreSQL {pp['postgres_cpu_cores']}, "
                f"publisher {pp['publisher_cpu_cores']}, sockets {pp['socket_clients_cpu_cores']}",
                "≥ 1,000/s",
                "-",
                pp["notifications_per_s"] >= 1000,
            )
        )
    if sd := r.get("scheduled"):
        out.append(
            _row(
                f"scheduled: {sd['notifications']:,} due within 1 s, 2 processes",
                f"{sd['delivered']:,} delivered, each once: {sd['each_once']}, "
                f"{sd['pushed_twice']} pushed twice; late p50/p99 {sd['late_db_p50_ms']} / "
                f"{sd['late_db_p99_ms']} ms (on the socket {sd['late_socket_p50_ms']} / "
                f"{sd['late_socket_p99_ms']} ms)",
                "each once; report",
                "-",
                sd["each_once"] and sd["pushed_twice"] == 0,
            )
        )
    if g := r.get("grouping"):
        out.append(
            _row(
                f"grouping: {g['publishes']:,} publishes, one key, {g['subscribers']:,} users",
                f"{g['inbox_rows_made']:,} inbox rows (counts {g['item_counts']}), "
                f"{g['pushes']:,} pushes in {g['seconds']} s; POST p50 {g['grouped_post_p50_ms']} "
                f"ms grouped, {g['ungrouped_post_p50_ms']} ms ungrouped",
                "1 row per user",
                "-",
                g["inbox_rows_made"] == g["subscribers"],
            )
        )
    if d := r.get("direct"):
        out.append(
            _row(
                f"direct: {d['users']:,} listed users vs a tag of as many",
                f"POST {d['listed_post_ms']} ms listed, {d['tag_post_ms']} ms by tag",
                "report",
                "-",
                None,
            )
        )
    if lat := r.get("latency"):
        out.append(
            _row(
                "latency p50 / p99 (50 subs, 200 x 20 ms)",
                f"{lat['p50_ms']} / {lat['p99_ms']} ms, lost {lat['lost']} "
                f"(POST answered: {lat['post_p50_ms']} / {lat['post_p99_ms']} ms)",
                "≤ 3 / ≤ 10 ms, 0 lost",
                "91 / 182 ms",
                lat["p50_ms"] <= 3 and lat["p99_ms"] <= 10 and lat["lost"] == 0,
            )
        )
    if t := r.get("throughput"):
        out.append(
            _row(
                "publish throughput (8 HTTP clients, 10 subs)",
                f"{t['notifications_per_s']:,}/s, {t['deliveries_per_s']:,} deliveries/s",
                "≥ 1,000/s, ≥ 10,000/s",
                "28/s, 278/s",
                t["notifications_per_s"] >= 1000 and t["deliveries_per_s"] >= 10_000,
            )
        )
    if d := r.get("deliveries"):
        out.append(
            _row(
                "socket deliveries per process",
                f"{d['deliveries_per_s']:,}/s ({d['deliveries']:,}/{d['expected']:,})",
                "≥ 50,000/s",
                "n/a",
                d["deliveries_per_s"] >= 50_000 and d["deliveries"] == d["expected"],
            )
        )
    for h in (r.get("history") or {}).get("sizes", []):
        worst = max(h["page_ms"], h["unread_count_ms"])
        out.append(
            _row(
                f"history {h['items']:,} items: page / cursor page / counts",
                f"{h['page_ms']} / {h['cursor_page_ms']} / {h['unread_count_ms']} ms",
                "≤ 5 ms (at 1,000,000)",
                {1_000: "2.5 ms", 10_000: "16.5 ms"}.get(h["items"], "-"),
                worst <= 5 if h["items"] >= 1_000_000 else None,
            )
        )
        if "two_tags_unread_ms" in h:
            worst = max(h["two_tags_unread_ms"], h["data_containment_ms"])
            out.append(
                _row(
                    f"history {h['items']:,}: filtered page (2 tags + unread / data @>)",
                    f"{h['two_tags_unread_ms']} / {h['data_containment_ms']} ms",
                    "≤ 5 ms, flat",
                    "-",
                    worst <= 5 if h["items"] >= 1_000_000 else None,
                )
            )
    if ba := r.get("bulk_archive"):
        out.append(
            _row(
                f"bulk archive of {ba['archived']:,} items of one user",
                f"commit {ba['commit_ms']} ms, on the socket {ba['socket_has_it_ms']} ms "
                f"({len(ba['frames'])} frames: {', '.join(sorted(set(ba['frames'])))}), "
                "socket kept open",
                "not closed as slow",
                "-",
                ba["socket_open"] and ba["status"] == 200,
            )
        )
    if c := r.get("capacity"):
        out.append(
            _row(
                f"capacity: {c['sockets']:,} idle sockets",
                f"{c['kib_per_socket']} KiB/socket, broadcast {c.get('broadcast_ms')} ms",
                "≤ 30 KiB, ≤ 2000 ms",
                "n/a",
                c["kib_per_socket"] <= 30 and (c.get("broadcast_ms") or 1e9) <= 2000
                if c["sockets"] >= 10_000
                else None,
            )
        )
    for w in r.get("workers", []):
        out.append(
            _row(
                f"fan-out to {w['subscribers']:,} sockets, {w['workers']} worker(s)",
                f"{w['last_socket_ms']} ms (runs: {w['runs_last_socket_ms']}), "
                f"{w['received']:,}/{w['expected']:,}, "
                f"sockets per worker {w['sockets_per_worker']}",
                "document",
                "-",
                None,
            )
        )
    if lg := r.get("login"):
        out.append(
            _row(
                "login POST /api/token/",
                f"{lg['logins_per_s']}/s ({lg['hash']})",
                "document",
                "13/s",
                None,
            )
        )
    return out


def table(r: dict) -> str:
    header = ["scenario", "citelink", "goal", "seed", "met"]
    body = rows(r)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    m = r["machine"]
    intro = (
        f"{m['date']}  commit {m['commit']}  {m['cpu']} x {m['cores']}  "
        f"Python {m['python']}  PostgreSQL {m.get('postgres')}"
    )
    return "\n".join(
        [
            intro,
            "",
            line(header),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *map(line, body),
        ]
    )


def charts(r: dict, folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if lat := r.get("latency"):
        left.hist(lat["samples_ms"], bins=60, color="#3465a4")
        left.axvline(lat["p50_ms"], color="black", linestyle="--", label=f"p50 {lat['p50_ms']} ms")
        left.axvline(
            lat["p99_ms"], color="#cc0000", linestyle="--", label=f"p99 {lat['p99_ms']} ms"
        )
        left.set(title="POST → socket latency (50 sockets x 200)", xlabel="ms", ylabel="deliveries")
        left.legend()
    if fan := r.get("fan_out"):
        ns = [f["subscribers"] for f in fan]
        right.plot(ns, [f["last_socket_ms"] for f in fan], "o-", label="citelink")
        seed = sorted(SEED_FAN_OUT_S.items())
        right.plot([n for n, _ in seed], [s * 1000 for _, s in seed], "s--", label="seed system")
        right.set(
            title="fan-out: POST → last socket",
            xlabel="subscribers with a socket",
            ylabel="ms",
            xscale="log",
            yscale="log",
        )
        right.legend()
    fig.tight_layout()
    path = folder / "bench.png"
    fig.savefig(path, dpi=110)
    made.append(path)
    return made
