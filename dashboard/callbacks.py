"""What reacts on the page: the chart controls, the rule editor, downloads.

Live data never passes through here (it streams over the gateway's websocket into the page's script).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from tickerdash.analytics.history.export import ExportError
from tickerdash.dashboard import downloads
from tickerdash.dashboard.layout import RULE_FIELDS
from tickerdash.dashboard.rules_panel import RuleEditor, RuleFormError
from tickerdash.ingest.cluster import AnyRedis
from tickerdash.ingest.contract.keys import Keys
from tickerdash.ingest.settings import Settings

FIELD_NAMES = tuple(f for f, *_ in RULE_FIELDS)


def register(app: dash.Dash, client: AnyRedis, keys: Keys, settings: Settings) -> None:
    """Attach every callback of the page to the app, reading and writing through this Redis client."""
    editor = RuleEditor(client, keys)

    @app.callback(
        Output("export-download", "data"),
        Output("export-error", "children"),
        Output("export-status", "children"),
        Input("export-button", "n_clicks"),
        State("export-symbols", "value"),
        State("export-interval", "value"),
        State("export-start", "value"),
        State("export-end", "value"),
        State("export-format", "value"),
        State("export-include", "value"),
        prevent_initial_call=True,
    )
    def download(_clicks: int, *form: Any) -> tuple[Any, str, str]:
        """Export what the form asks for with the CLI's code and hand the file to the browser; else say why not."""
        try:
            file = downloads.export_download(client, settings, downloads.request_from_form(*form))
        except ExportError as exc:  # NoDataError too: a range without bars writes nothing and says so
            return no_update, str(exc), ""
        return dcc.send_bytes(file.content, file.filename), "", f"downloaded {file.filename}"

    # The chart belongs to the page's script (see dashboard.app): these controls only tell it what to
    # show. Style and overlays change trace visibility in place (Plotly.restyle), keeping the streamed
    # points; a new interval makes the script fetch that interval's back-fill. The controls start at what
    # the page's URL names (a reload or a shared link): Dash runs initialControls first, as its outputs
    # are the inputs of the other two.
    app.clientside_callback(
        ClientsideFunction(namespace="tickerdash", function_name="initialControls"),
        Output("chart-interval", "value"),
        Output("chart-style", "value"),
        Input("td-config", "id"),
    )
    app.clientside_callback(
        ClientsideFunction(namespace="tickerdash", function_name="applyStyle"),
        Output("style-applied", "data"),
        Input("chart-style", "value"),
        Input("chart-overlays", "value"),
    )
    app.clientside_callback(
        ClientsideFunction(namespace="tickerdash", function_name="applyInterval"),
        Output("interval-applied", "data"),
        Input("chart-interval", "value"),
    )

    @app.callback(Output("rules-list", "children"), Input("rules-version", "data"))
    def list_rules(_version: int) -> Any:
        """The rules table, re-read whenever the editor changed something."""
        return rules_table(editor.list())

    @app.callback(
        *(Output(f"rule-{name}-error", "children") for name in FIELD_NAMES),
        Output("rule-form-error", "children"),
        Output("rule-form-status", "children"),
        Output("rules-version", "data"),
        Input("rule-save", "n_clicks"),
        *(State(f"rule-{name}", "value") for name in FIELD_NAMES),
        State("rule-enabled", "value"),
        State("rule-include-bad-prints", "value"),
        State("rules-version", "data"),
        prevent_initial_call=True,
    )
    def save_rule(_clicks: int, *values: Any) -> tuple[Any, ...]:
        """Validate the form with the CLI's rules and save it; an error goes next to its field."""
        *fields, enabled, include_bad_prints, version = values
        form = dict(zip(FIELD_NAMES, fields, strict=True))
        errors = dict.fromkeys(FIELD_NAMES, "")
        try:
            rule = editor.save(form, enabled=bool(enabled), include_bad_prints=bool(include_bad_prints))
        except RuleFormError as exc:
            errors_out = {**errors, **({exc.field: exc.message} if exc.field in errors else {})}
            general = "" if exc.field in errors else exc.message
            return (*errors_out.values(), general, "", no_update)
        return (*errors.values(), "", f"saved rule {rule.id}", (version or 0) + 1)

    @app.callback(
        *(Output(f"rule-{name}", "value") for name in FIELD_NAMES),
        Output("rule-enabled", "value"),
        Output("rule-include-bad-prints", "value"),
        Input({"type": "rule-edit", "rule": ALL}, "n_clicks"),
        Input("rule-clear", "n_clicks"),
        prevent_initial_call=True,
    )
    def fill_form(_edits: list[int | None], _clear: int) -> tuple[Any, ...]:
        """Put a rule into the form for editing (or empty the form)."""
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and ctx.triggered and ctx.triggered[0]["value"]:
            form = editor.form_values(str(trigger["rule"]))
            if form is not None:
                checked = (["on"] if form["enabled"] else [], ["on"] if form["include_bad_prints"] else [])
                return (*(form.get(name, "") for name in FIELD_NAMES), *checked)
        if trigger == "rule-clear":
            return (*("" for _ in FIELD_NAMES), ["on"], [])
        return tuple(no_update for _ in range(len(FIELD_NAMES) + 2))

    @app.callback(
        Output("rules-version", "data", allow_duplicate=True),
        Output("rule-form-status", "children", allow_duplicate=True),
        Input({"type": "rule-set-enabled", "rule": ALL, "enabled": ALL}, "n_clicks"),
        Input({"type": "rule-delete", "rule": ALL}, "n_clicks"),
        State("rules-version", "data"),
        prevent_initial_call=True,
    )
    def change_rule(_toggles: list[int | None], _deletes: list[int | None], version: int) -> tuple[Any, Any]:
        """Enable, disable or delete the rule whose button was pressed (each is idempotent: re-fires are harmless)."""
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not (ctx.triggered and ctx.triggered[0]["value"]):
            return no_update, no_update  # the buttons were (re)drawn, not pressed
        rule_id = str(trigger["rule"])
        if trigger["type"] == "rule-delete":
            message = f"deleted rule {rule_id}" if editor.remove(rule_id) else f"rule {rule_id} was already gone"
        else:
            message = editor.set_enabled(rule_id, bool(trigger["enabled"]))
        return (version or 0) + 1, message


def rules_table(rules: list[dict[str, Any]]) -> html.Table | html.P:
    """The rules as a table of text cells with edit, enable/disable and delete buttons."""
    if not rules:
        return html.P("No rules yet: add one below.", className="td-muted")
    header = html.Tr([html.Th(h) for h in ("id", "symbol", "drop %", "window", "cooldown", "name", "state", "")])
    rows = []
    for rule in rules:
        rule_id = rule["id"]
        rows.append(
            html.Tr(
                [
                    html.Td(rule_id),
                    html.Td(rule["symbol"]),
                    html.Td(rule["drop_pct"]),
                    html.Td(rule["window"]),
                    html.Td(rule["cooldown"]),
                    html.Td(rule["name"]),
                    html.Td("enabled" if rule["enabled"] else "disabled"),
                    html.Td(
                        [
                            html.Button(
                                "edit", id={"type": "rule-edit", "rule": rule_id}, className="td-button td-small"
                            ),
                            html.Button(
                                "disable" if rule["enabled"] else "enable",
                                id={"type": "rule-set-enabled", "rule": rule_id, "enabled": not rule["enabled"]},
                                className="td-button td-small",
                            ),
                            html.Button(
                                "delete",
                                id={"type": "rule-delete", "rule": rule_id},
                                className="td-button td-small td-danger",
                            ),
                        ]
                    ),
                ],
                id=f"rule-row-{rule_id}",
                className="td-rule-row",
            )
        )
    return html.Table([html.Thead(header), html.Tbody(rows)], className="td-table", id="rules-table")
