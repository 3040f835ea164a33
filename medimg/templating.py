"""Jinja2 environments for medimg's HTML pages: one place sets how every page is rendered.

Each page's markup lives in a ``templates/`` folder of the package that writes it
(``medimg/evaluation/templates``, ``medimg/explain/templates``), shipped as package data.
Autoescape is on for every template, so any text that comes from the data (case keys,
group and column names, failure reasons, titles) is HTML-escaped; markup that must stay
markup is written in the template, never passed in as a string.
"""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def package_environment(package: str) -> jinja2.Environment:
    """The template environment of one medimg package: its ``templates/`` folder, autoescape on.

    Pages may extend the templates several packages share, in ``medimg/templates``.

    The environment is built once per package; callers may add their own filters to it.

    Args:
        package: Dotted name of the package holding a ``templates/`` folder.

    Example:
        >>> env = package_environment("medimg.explain")
        >>> env.from_string("<td>{{ key }}</td>").render(key="<b>")
        '<td>&lt;b&gt;</td>'
    """
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.PackageLoader(package, "templates"), jinja2.PackageLoader("medimg", "templates")]
        ),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
