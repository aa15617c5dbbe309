"""What Grafana and its two data source plugins do with a dashboard's queries, ported from their sources.

Grafana cannot run here, so the dashboard tests replay the steps a panel's query
goes through before it reaches the store or DuckDB: the dashboard's variable
interpolation (grafana/scenes `sceneInterpolator`, `formatRegistry`, `macros`),
then each plugin's front end and backend:

- Infinity (grafana/grafana-infinity-datasource 3.11.1): `src/interpolate.ts`,
  `pkg/models/query.go` (query model, `ApplyDefaultsToQuery`), `pkg/models/macros.go`
  and infinity-libs `lib/go/macros`, `pkg/infinity/request.go` (`GetQueryURL`),
  `pkg/infinity/client.go` (`CanAllowURL`), `pkg/models/settings.go`, and
  infinity-libs `lib/go/utils/time.go` (how a "timestamp" column is read).
- DuckDB (motherduckdb/grafana-duckdb-datasource 0.4.5): `src/datasource.ts`
  (every variable in the `sqlstring` format), `pkg/plugin/duckdb_driver.go` (its
  macros over grafana-plugin-sdk-go `data/sqlutil/macros.go`, the sqlds defaults),
  `pkg/models/settings.go`; the query model is @grafana/plugin-ui's `SQLQuery`,
  whose `format` is sqlutil's numeric `FormatQueryOption`.

Only what the dashboards use is ported; anything else raises, so a dashboard
that starts using it fails here until the port follows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# ---- Grafana (scenes) ------------------------------------------------------------------------

VARIABLE_REGEX = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]"
    r"|\$\{(\w+)((?:\.[^:^{}\[\]]+|\[\"[^\"]*\"\]|\['[^']*'\]|\[[^\]\"']*\])*)(?::([^}]+))?\}")


@dataclass(frozen=True)
class Request:
    """One panel refresh: the dashboard's time range, the panel's interval and the variables' values."""

    start: datetime
    end: datetime
    interval_ms: int = 60_000
    variables: dict[str, str] = field(default_factory=dict)

    def interval(self) -> str:
        """Grafana's interval text (kbn / gtime.FormatInterval) for the round intervals used here.

        >>> Request(datetime.now(), datetime.now(), 60_000).interval()
        '1m'
        """
        for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if self.interval_ms % ms == 0:
                return f"{self.interval_ms // ms}{unit}"
        return f"{self.interval_ms}ms"


def sqlstring(value: Any) -> str:
    """scenes' `sqlstring` format: single-quoted, `'` doubled and `"` backslashed.

    >>> sqlstring("it's")
    "'it''s'"
    """
    return "'" + re.sub(r"['\"]", lambda m: {"'": "''", '"': '\\"'}[m.group(0)], str(value)) + "'"


def interpolate(text: str, req: Request, default_format: str | None) -> str:
    """`templateSrv.replace(text, request.scopedVars, format)` on a scenes dashboard.

    The request's scoped variables (`__interval`, `__interval_ms`) and the dashboard's
    variables are formatted; `__from` / `__to` are macros (epoch milliseconds); any other
    name, such as the DuckDB plugin's `$__timeFilter`, is left for the data source.
    """
    scoped: dict[str, Any] = {"__interval": req.interval(), "__interval_ms": req.interval_ms, **req.variables,
                              "__from": int(req.start.timestamp() * 1000), "__to": int(req.end.timestamp() * 1000)}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6) or default_format
        if m.group(5):
            raise AssertionError(f"field paths ({m.group(0)}) are not ported")
        if name not in scoped:
            return m.group(0)
        value = scoped[name]
        if fmt is None or fmt in ("glob", "raw"):
            return str(value)
        if fmt == "sqlstring":
            return sqlstring(value)
        raise AssertionError(f"variable format {fmt} ({m.group(0)}) is not ported")

    return VARIABLE_REGEX.sub(replace, text)


def rfc3339(t: datetime) -> str:
    """Go's `t.UTC().Format(time.RFC3339)`."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- DuckDB plugin ---------------------------------------------------------------------------

DUCKDB_JSON_DATA = {"path", "initSql", "maxOpenConns"}  # PluginSettings' json tags
SQL_QUERY_KEYS = {"refId", "datasource", "hide", "alias", "format", "rawSql", "dataset", "catalog", "table", "sql",
                  "editorMode", "rawQuery"}
FORMAT_QUERY_OPTIONS = {0: "time series", 1: "table", 2: "logs", 3: "trace", 4: "multi"}


class MacroError(AssertionError):
    """sqlutil.Interpolate returned an error (the panel would show it)."""


def _parse_args(rest: str) -> tuple[list[str] | None, int]:
    """sqlutil.parseArgs: a bracketed argument list at the start of `rest`, and its length."""
    if not rest.startswith("("):
        return None, 0
    args, depth, arg = [], 0, ""
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(arg.strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(arg.strip())
            arg = ""
            continue
        arg += ch
    return None, -1


def _sqlds_macros(req: Request) -> dict[str, Any]:
    def count(args: list[str] | None, n: int, name: str) -> list[str]:
        got = args or []
        if n == 0 and (not got or (len(got) == 1 and not got[0].strip())):
            return []
        if len(got) != n:
            raise MacroError(f"$__{name}: expected {n} argument(s), received {len(got)}")
        return got

    def time_group(args: list[str] | None) -> str:
        column, period = count(args, 2, "timeGroup")
        parts = ["minute", "hour", "day", "month", "year"]
        if period not in parts:
            return ""
        return ",".join(f"datepart({p}, {column})" for p in parts[parts.index(period):])

    def bare(name: str, args: list[str] | None, t: str) -> str:
        count(args, 0, name)
        return f"'{t}'"

    frm, to = rfc3339(req.start), rfc3339(req.end)
    return {
        "interval": lambda a: req.interval(),
        "interval_ms": lambda a: str(req.interval_ms),
        "timeFilter": lambda a: "{0} >= '{1}' AND {0} <= '{2}'".format(count(a, 1, "timeFilter")[0], frm, to),
        # The DuckDB plugin replaces sqlds' one-argument timeFrom/timeTo with bare timestamps.
        "timeFrom": lambda a: bare("timeFrom", a, frm),
        "timeTo": lambda a: bare("timeTo", a, to),
        "timeGroup": time_group,
        "table": lambda a: "",
        "column": lambda a: "",
    }


def sqlds_interpolate(raw_sql: str, req: Request) -> str:
    """sqlutil.Interpolate with the DuckDB driver's macros: longest names first, every match replaced."""
    macros = _sqlds_macros(req)
    for name in sorted(macros, key=len, reverse=True):
        matches = []  # getMacroMatches, on the text as it is before this macro's replacements
        for m in re.finditer(rf"\$__{name}\b", raw_sql):
            args, length = _parse_args(raw_sql[m.end():])
            if length < 0:
                raise MacroError("failed to parse macro arguments (missing close bracket?)")
            matches.append((raw_sql[m.start():m.end() + length], args))
        for full, args in matches:
            raw_sql = raw_sql.replace(full, macros[name](args))
    return raw_sql


def duckdb_sql(target: dict[str, Any], req: Request, front_end: bool = True) -> str:
    """The SQL DuckDB runs for a panel target: front-end variables (`sqlstring`), then the backend's macros.

    `front_end=False` is a query the backend gets without the front end (alerting, recorded queries).
    """
    raw = interpolate(target["rawSql"], req, "sqlstring") if front_end else target["rawSql"]
    return sqlds_interpolate(raw, req)


def duckdb_variable_sql(query: str, req: Request) -> str:
    """A query variable: `metricFindQuery(query: string)` interpolates like SqlDatasource.interpolateVariable."""
    return sqlds_interpolate(interpolate(query, req, None), req)


# ---- Infinity plugin -------------------------------------------------------------------------

INFINITY_JSON_DATA = {  # InfinitySettingsJson's json tags
    "is_mock", "auth_method", "apiKeyKey", "apiKeyType", "oauth2", "aws", "oauthPassThru", "tlsSkipVerify",
    "serverName", "tlsAuth", "tlsAuthWithCACert", "timeoutInSeconds", "proxy_type", "proxy_url", "proxy_username",
    "refData", "customHealthCheckEnabled", "customHealthCheckUrl", "customHealthCheckUrlOptions",
    "azureBlobCloudType", "azureBlobAccountUrl", "azureBlobAccountName", "pathEncodedUrlsEnabled",
    "ignoreStatusCodeCheck", "allowDangerousHTTPMethods", "allowedHosts", "unsecuredQueryHandling", "keepCookies"}
INFINITY_QUERY_KEYS = {  # Query's json tags, and the DataQuery keys Grafana adds
    "refId", "datasource", "hide", "type", "format", "source", "referenceName", "url", "url_options", "data",
    "parser", "filterExpression", "summarizeExpression", "summarizeBy", "summarizeAlias", "uql", "groq",
    "csv_options", "json_options", "root_selector", "columns", "computed_columns", "filters", "seriesCount",
    "expression", "alias", "dataOverrides", "global_query_id", "query_mode", "method", "transformations"}
URL_OPTIONS_KEYS = {"method", "params", "headers", "data", "body_type", "body_content_type", "body_form",
                    "body_graphql_query", "body_graphql_variables"}
QUERY_TYPES = {"json", "csv", "tsv", "xml", "graphql", "html", "uql", "groq", "google-sheets", "transformations"}
PARSERS = {"simple", "backend", "jq-backend", "uql", "groq"}
FORMATS = {"table", "timeseries", "logs", "trace", "dataframe", "as-is", "node-graph-nodes", "node-graph-edges"}
COLUMN_TYPES = {"string", "number", "timestamp", "timestamp_epoch", "timestamp_epoch_s", "boolean"}


@dataclass(frozen=True)
class InfinitySettings:
    url: str
    allowed_hosts: list[str]
    allow_dangerous_methods: bool = False


def _with_scheme(url: str) -> str:
    """models.FixMissingURLSchema."""
    low = url.lower()
    if not url.strip() or low.startswith(("http://", "https://")):
        return url
    return ("http://" if low == "localhost" or low.startswith("localhost:") else "https://") + url


def infinity_settings(datasource: dict[str, Any]) -> InfinitySettings:
    """LoadSettings and Validate (allowed hosts must be http(s) URLs with a host name)."""
    json_data = datasource.get("jsonData", {})
    hosts = list(json_data.get("allowedHosts", []))
    for host in hosts:
        parsed = urlsplit(_with_scheme(host))
        assert parsed.hostname and parsed.scheme in ("http", "https"), f"invalid url in allowed list {host}"
    return InfinitySettings(datasource.get("url", ""), hosts, bool(json_data.get("allowDangerousHTTPMethods")))


def can_allow_url(url: str, allowed: list[str]) -> bool:
    """client.CanAllowURL: some allowed entry is a prefix of the URL and names its host."""
    if not allowed:
        return True
    hosts = {urlsplit(_with_scheme(a)).hostname for a in allowed}
    return any(url.startswith(a) and urlsplit(_with_scheme(url)).hostname in hosts for a in allowed)


def _backend_macros(text: str, req: Request) -> str:
    """models.InterPolateMacros: Infinity's own macros, then infinity-libs' time macros (epoch ms only)."""
    for name in ("combineValues", "customInterval"):
        if re.search(rf"\$__{name}\b", text):
            raise AssertionError(f"$__{name} is not ported")
    times = {"from": req.start, "timeFrom": req.start, "to": req.end, "timeTo": req.end}

    def replace(m: re.Match[str]) -> str:
        if m.group(2):
            raise AssertionError(f"time macro formats ({m.group(0)}) are not ported")
        return str(int(times[m.group(1)].timestamp() * 1000))

    return re.sub(r"\$\{__(from|timeFrom|to|timeTo):?(.*?)\}", replace, text).strip(" ")


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def infinity_request(target: dict[str, Any], settings: InfinitySettings, req: Request) -> HttpCall:
    """The HTTP request Infinity's backend sends for a panel target (front end, defaults, macros, URL)."""
    opts = dict(target.get("url_options") or {})
    # Front end (interpolate.ts): glob-formatted variables in the URL and the body fields.
    url = interpolate(target.get("url", ""), req, "glob")
    for key in ("data", "body_type", "body_content_type"):
        if key in opts:
            opts[key] = interpolate(opts[key], req, "glob")
    # Backend: ApplyDefaultsToQuery, then ApplyMacros.
    method = (opts.get("method") or target.get("method") or "GET").strip() or "GET"
    body_type, content_type = opts.get("body_type", ""), opts.get("body_content_type", "")
    if method.upper() != "GET":
        body_type = body_type or "raw"
        content_type = content_type or "text/plain"
    url = _backend_macros(url, req)
    body = _backend_macros(opts.get("data", ""), req)
    # GetRequest / GetQueryURL.
    if method.upper() in ("PUT", "PATCH", "DELETE") and not settings.allow_dangerous_methods:
        raise AssertionError("only GET and POST HTTP methods are allowed for this data source")
    if not url.startswith(settings.url):
        url = settings.url + url
    parts = urlsplit(_with_scheme(url))
    params = parse_qsl(parts.query, keep_blank_values=True)
    params += [(p["key"], _backend_macros(interpolate(p["value"], req, "glob"), req)) for p in opts.get("params", [])]
    url = urlunsplit(parts._replace(query=urlencode(sorted(params, key=lambda kv: kv[0]))))  # q.Encode()
    assert can_allow_url(url, settings.allowed_hosts), f"{url}: url is not in the allowed list"
    headers = {}
    if method.upper() == "POST":
        headers["Content-Type"] = content_type if body_type == "raw" else "application/json"
    if method.upper() == "GET":
        return HttpCall("GET", url, headers, None)
    assert body_type == "raw", f"body type {body_type} is not ported"
    return HttpCall(method.upper(), url, headers, body.encode())


def gjson_rows(document: Any, root_selector: str) -> Any:
    """jsonframer's GJSON root selector, for the plain dotted paths the dashboards use."""
    assert re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", root_selector), f"selector {root_selector} not ported"
    for key in root_selector.split("."):
        document = document[key]
    return document


_DATES = [r"\d{4}-\d{2}-\d{2}", r"\d{4}-\d{1,2}-\d{1,2}", r"\d{4}/\d{2}/\d{2}", r"\d{4}/\d{1,2}/\d{1,2}",
          r"\d{2}/\d{2}/\d{4}", r"\d{1,2}/\d{1,2}/\d{4}"]
_TIMES = ["", r"\d{2}:\d{2}", r"\d{2}:\d{2}:\d{2}(\.\d+)?", r"\d{2}:\d{2}:\d{2}(\.\d+)?Z",
          r"\d{2}:\d{2}:\d{2}(\.\d+)? [+-]\d{2}:\d{2}", r"\d{2}:\d{2}:\d{2} [A-Z]{3,4}"]
_RFC3339 = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"


def infinity_reads_as_time(value: str) -> bool:
    """utils.GetTimeFromString with no format: RFC 3339, or a date with one of its time layouts.

    >>> infinity_reads_as_time("2026-03-04T10:00:00.5+00:00"), infinity_reads_as_time("2026-03-04 10:00:00+00")
    (True, False)
    """
    layouts = [_RFC3339, r"\d{4}"] + [f"{d}{s}{t}" if t else d for d in _DATES for t in _TIMES for s in "T "]
    layouts += [r"\d{4}-\d{2}", r"\d{4}/\d{2}", r"\d{2}-\d{4}", r"\d{2}/\d{4}"]
    return any(re.fullmatch(layout, value) for layout in layouts)
