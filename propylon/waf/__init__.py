"""The engine behind the ``waf`` policy (``propylon/filters/waf.py``): a ctypes binding to
libmodsecurity v3 (``_libmodsecurity``), the rule set of a policy (``rules``, with the shipped
Log4Shell rules of ``log4shell``), one request's transaction on the WAF thread pool
(``exchange``) and what the rules reported (``report``)."""
