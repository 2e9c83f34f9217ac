"""Every bad input gets one exact, actionable ``FILE:LINE: message`` (the line of the field)."""

from __future__ import annotations

import textwrap

import pytest

from hybridmesh.resources import ResourceError, load_text

API = "apiVersion: hybridmesh.io/v1alpha1\n"

WEB = API + textwrap.dedent("""\
    kind: Workload
    metadata: {name: web, namespace: shop, labels: {app: web}}
    spec:
      command: [srv, "{port}"]
      ports: [{name: http, containerPort: 8080}]
    ---
    """)  # lines 1-7; what follows starts on line 8

WEB_SVC = WEB + API + textwrap.dedent("""\
    kind: Service
    metadata: {name: web, namespace: shop}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    ---
    """)  # lines 8-14; what follows starts on line 15


def doc(body: str) -> str:
    """One document: the apiVersion line, then ``body`` (so body's first line is line 2)."""
    return API + textwrap.dedent(body)


CASES: list[tuple[str, str, str]] = [
    ("unknown-field", doc("""\
        kind: Workload
        metadata: {name: web, namespace: shop}
        spec:
          command: [srv]
          replica: 2
        """),
     't.yaml:6: Workload shop/web: unknown field "replica" in spec; did you mean "replicas"?'),
    ("unknown-nested-field-hides-missing", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          ports:
          - containerport: 80
        """),
     't.yaml:7: Workload default/web: unknown field "containerport" in spec.ports[0]; '
     'did you mean "containerPort"?'),
    ("unknown-field-no-guess", doc("""\
        kind: Node
        metadata: {name: n1}
        spec: {cpus: 2}
        """),
     't.yaml:4: Node n1: unknown field "cpus" in spec; remove it'),
    ("wrong-type", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          replicas: two
        """),
     't.yaml:6: Workload default/web: spec.replicas: expected an integer, got "two"'),
    ("unknown-kind", doc("""\
        kind: Deployment
        metadata: {name: web}
        """),
     't.yaml:2: unknown kind "Deployment"; expected one of MeshConfig, Node, Workload, Service, '
     "AuthorizationPolicy, HTTPRoute"),
    ("kind-typo", doc("""\
        kind: workload
        metadata: {name: web}
        """),
     't.yaml:2: unknown kind "workload"; did you mean "Workload"?'),
    ("missing-kind", doc("""\
        metadata: {name: web}
        """),
     't.yaml:1: missing "kind"; set it to one of MeshConfig, Node, Workload, Service, '
     "AuthorizationPolicy, HTTPRoute"),
    ("document-is-a-list", "# a comment\n- a\n- b\n",
     "t.yaml:2: this document is a list, not a mapping; each document must be one resource "
     "with apiVersion, kind, metadata and spec"),
    ("wrong-api-version", "kind: Node\nmetadata: {name: n1}\napiVersion: apps/v1\n",
     't.yaml:3: Node n1: apiVersion "apps/v1" is not supported; use "hybridmesh.io/v1alpha1"'),
    ("missing-api-version", "kind: Node\nmetadata: {name: n1}\n",
     't.yaml:1: Node n1: missing "apiVersion"; add apiVersion: hybridmesh.io/v1alpha1'),
    ("missing-metadata", doc("kind: Node\n"),
     't.yaml:1: Node: missing required field "metadata"'),
    ("missing-name", doc("""\
        kind: Node
        metadata:
          labels: {a: b}
        """),
     't.yaml:3: Node: missing required field "name" in metadata'),
    ("name-not-dns-label", doc("""\
        kind: Node
        metadata: {name: Node_1}
        """),
     't.yaml:3: Node Node_1: metadata.name: "Node_1" is not a valid DNS label (lowercase '
     'letters, digits and "-", starting and ending with a letter or digit, at most 63 '
     'characters); try "node-1"'),
    ("port-out-of-range", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          ports:
          - name: http
            containerPort: 70000
        """),
     "t.yaml:8: Workload default/web: spec.ports[0].containerPort: 70000 is out of range; "
     "use 1-65535"),
    ("bad-cpu-quantity", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          resources:
            limits:
              cpu: 2 cores
        """),
     't.yaml:8: Workload default/web: spec.resources.limits.cpu: invalid cpu quantity '
     '"2 cores"; use cores or millicores, e.g. "1", "0.5" or "500m"'),
    ("bad-memory-quantity", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          resources:
            requests: {memory: 1GB}
        """),
     't.yaml:7: Workload default/web: spec.resources.requests.memory: invalid memory quantity '
     '"1GB"; use bytes or a suffix (Ki, Mi, Gi, Ti, k, M, G, T), e.g. "128Mi" or "1G"'),
    ("request-above-limit", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          resources:
            limits: {cpu: 500m}
            requests: {cpu: "1"}
        """),
     "t.yaml:6: Workload default/web: spec.resources: requests.cpu (1) is more than "
     "limits.cpu (500m); lower the request"),
    ("bad-duration", doc("""\
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          certificateTTL: 1 day
        """),
     't.yaml:5: MeshConfig mesh: spec.certificateTTL: invalid duration "1 day"; use a number '
     'with a unit (h, m, s, ms, us, ns), e.g. "24h", "1m30s" or "500ms"'),
    ("ttl-too-short", doc("""\
        kind: MeshConfig
        metadata: {name: mesh}
        spec: {certificateTTL: 30s}
        """),
     "t.yaml:4: MeshConfig mesh: spec.certificateTTL: 30s is too short; use at least 1m "
     "(certificates are rotated before they expire)"),
    ("bad-placement", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          placement: sidecars
        """),
     't.yaml:6: Workload default/web: spec.placement: "sidecars" is not allowed; expected one '
     'of none, sidecar, sidecar+ebpf, node, kernel; did you mean "sidecar"?'),
    ("enum-read-as-boolean", doc("""\
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          mtls: {mode: OFF}
        """),
     "t.yaml:5: MeshConfig mesh: spec.mtls.mode: a boolean (YAML reads unquoted yes, no, on, "
     "off, true and false as booleans) is not allowed; expected one of STRICT, PERMISSIVE"),
    ("cidr-host-bits", doc("""\
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          serviceCIDR: 10.96.0.1/16
        """),
     't.yaml:5: MeshConfig mesh: spec.serviceCIDR: "10.96.0.1/16" has host bits set; '
     'did you mean "10.96.0.0/16"?'),
    ("empty-command", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: []
        """),
     "t.yaml:5: Workload default/web: spec.command: must not be empty"),
    ("missing-command", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          replicas: 1
        """),
     't.yaml:4: Workload default/web: missing required field "command" in spec'),
    ("unknown-placeholder", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command:
          - srv
          - --port={prot}
        """),
     't.yaml:7: Workload default/web: spec.command[1]: "--port={prot}" uses unknown placeholder '
     '{prot}; did you mean "{port}"? (placeholders: {port}, {pod}, {namespace}, {node}, '
     "{pod_ip})"),
    ("udp-port", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          ports: [{containerPort: 53, protocol: UDP}]
        """),
     't.yaml:6: Workload default/web: spec.ports[0].protocol: "UDP" is not allowed; expected '
     "one of TCP"),
    ("label-value-not-string", doc("""\
        kind: Workload
        metadata:
          name: web
          labels:
            version: 2
        spec:
          command: [srv]
        """),
     't.yaml:6: Workload default/web: metadata.labels.version: expected a string, got 2; '
     'quote it: "2"'),
    ("env-value-boolean", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          env:
          - name: DEBUG
            value: yes
        """),
     "t.yaml:8: Workload default/web: spec.env[0].value: expected a string, got a boolean "
     "(YAML reads unquoted yes, no, on, off, true and false as booleans); quote the value"),
    ("yaml-bad-indentation", doc("""\
        kind: Node
        metadata:
          name: a
         labels: {}
        """),
     "t.yaml:5: invalid YAML: bad indentation: this line does not line up with the lines "
     "before it"),
    ("yaml-tab", API + "kind: Node\nmetadata:\n\tname: a\n",
     "t.yaml:4: invalid YAML: a tab character; YAML indentation must use spaces"),
    ("yaml-unclosed-flow-mapping", API + "kind: Node\nmetadata: {name: a\n",
     't.yaml:3: invalid YAML: a "{...}" mapping is not closed or lacks a ","'),
    ("yaml-duplicate-key", doc("""\
        kind: Node
        metadata: {name: a}
        kind: Node
        """),
     't.yaml:4: duplicate key "kind" (first set on line 2); remove one of them'),
    ("duplicate-resource", doc("""\
        kind: Node
        metadata: {name: a}
        ---
        """) + doc("""\
        kind: Node
        metadata: {name: a}
        """),
     "t.yaml:7: Node a: already defined at t.yaml:1; rename or remove one of them"),
    ("two-mesh-configs", doc("""\
        kind: MeshConfig
        metadata: {name: a}
        ---
        """) + doc("""\
        kind: MeshConfig
        metadata: {name: b}
        """),
     "t.yaml:7: MeshConfig b: only one MeshConfig is allowed and MeshConfig a is already "
     "defined at t.yaml:1; merge the two"),
    ("selector-matches-nothing", WEB + doc("""\
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: webb}
          ports: [{port: 80}]
        """),
     't.yaml:12: Service shop/web: selector {app: webb} matches no Workload in namespace '
     '"shop"; labels there are: app=web'),
    ("selector-empty-namespace", WEB + doc("""\
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports: [{port: 80}]
        """),
     't.yaml:12: Service default/web: selector {app: web} matches no Workload in namespace '
     '"default"; there are no Workloads in that namespace'),
    ("named-target-port-missing", WEB + doc("""\
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          ports:
          - port: 80
            targetPort: htp
        """),
     't.yaml:15: Service shop/web: spec.ports[0].targetPort: Workload shop/web has no port '
     'named "htp"; its named ports are: http (8080)'),
    ("unnamed-service-ports", WEB + doc("""\
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          ports: [{port: 80}, {port: 81}]
        """),
     "t.yaml:13: Service shop/web: spec.ports: every port needs a name when a Service has "
     "more than one port"),
    ("cluster-ip-outside-range", WEB + doc("""\
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          ports: [{port: 80}]
          clusterIP: 10.0.0.1
        """),
     "t.yaml:14: Service shop/web: spec.clusterIP: 10.0.0.1 is not a usable address of "
     "serviceCIDR 10.96.0.0/16; pick one inside it, or leave clusterIP out to get one"),
    ("cluster-ip-duplicate", WEB + doc("""\
        kind: Service
        metadata: {name: a, namespace: shop}
        spec: {selector: {app: web}, ports: [{port: 80}], clusterIP: 10.96.0.10}
        ---
        """) + doc("""\
        kind: Service
        metadata: {name: b, namespace: shop}
        spec: {selector: {app: web}, ports: [{port: 80}], clusterIP: 10.96.0.10}
        """),
     "t.yaml:16: Service shop/b: spec.clusterIP: 10.96.0.10 is already used by Service shop/a "
     "(t.yaml:11); pick another or leave it out"),
    ("service-name-starts-with-digit", WEB + doc("""\
        kind: Service
        metadata: {name: 1web, namespace: shop}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        """),
     't.yaml:10: Service shop/1web: metadata.name: "1web" must start with a letter: Service '
     "names are DNS-1035 labels because they become DNS names"),
    ("unknown-node", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          node: node-2
        """),
     't.yaml:6: Workload default/web: spec.node: Node "node-2" is not declared (nodes: '
     'node-1); did you mean "node-1"?'),
    ("port-placeholder-without-ports", doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv, "{port}"]
        """),
     "t.yaml:5: Workload default/web: spec.command uses {port} but spec.ports is empty; "
     "declare a containerPort"),
    ("workload-name-too-long-for-pods", doc(f"""\
        kind: Workload
        metadata:
          name: {"w" * 62}
        spec: {{command: [srv], replicas: 10}}
        """),
     f't.yaml:4: Workload default/{"w" * 62}: metadata.name: "{"w" * 62}" is too long: pod names '
     f'"{"w" * 62}-<i>" must fit in 63 characters; shorten it by 1'),
    ("policy-selector-matches-nothing", WEB + doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: shop}
        spec:
          selector:
            matchLabels: {app: api}
        """),
     't.yaml:13: AuthorizationPolicy shop/p: spec.selector.matchLabels {app: api} matches no '
     'Workload in namespace "shop"; labels there are: app=web'),
    ("root-namespace-policy-selector-matches-nothing-anywhere", WEB + doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: hybridmesh-system}
        spec:
          selector:
            matchLabels: {app: api}
        """),
     't.yaml:13: AuthorizationPolicy hybridmesh-system/p: spec.selector.matchLabels {app: api} '
     'matches no Workload in any namespace (a policy in the root namespace "hybridmesh-system" '
     'applies mesh-wide); labels in the mesh are: app=web'),
    ("policy-selector-and-target-refs", doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec:
          selector: {matchLabels: {app: web}}
          targetRefs: [{kind: Service, name: web}]
        """),
     "t.yaml:4: AuthorizationPolicy default/p: spec: set either selector or targetRefs, not "
     "both (neither = the whole namespace)"),
    ("policy-target-ref-missing", WEB_SVC + doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: shop}
        spec:
          targetRefs:
          - {kind: Service, group: "", name: wbe}
        """),
     't.yaml:20: AuthorizationPolicy shop/p: spec.targetRefs[0]: Service "wbe" does not exist '
     'in namespace "shop"; did you mean "web"?'),
    ("principal-without-scheme", doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec:
          rules:
          - from:
            - source:
                principals: [cluster.local/ns/shop/sa/web]
        """),
     "t.yaml:8: AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[0]: "
     '"cluster.local/ns/shop/sa/web" is not a SPIFFE ID like spiffe://<trust-domain>/ns/'
     '<namespace>/sa/<service-account>; did you mean "spiffe://cluster.local/ns/shop/sa/web"?'),
    ("principal-wildcard-in-middle", doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec:
          rules:
          - from: [{source: {principals: ["spiffe://cluster.local/ns/*/sa/web"]}}]
        """),
     "t.yaml:6: AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[0]: "
     '"spiffe://cluster.local/ns/*/sa/web" is not a valid match: use an exact value, '
     '"prefix*", "*suffix" or "*" (a single "*" only at the start or the end)'),
    ("policy-bad-action", doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec: {action: AUDIT}
        """),
     't.yaml:4: AuthorizationPolicy default/p: spec.action: "AUDIT" is not allowed; expected '
     "one of ALLOW, DENY"),
    ("policy-lowercase-method", doc("""\
        kind: AuthorizationPolicy
        metadata: {name: p}
        spec:
          rules:
          - to:
            - operation:
                methods: [get]
        """),
     "t.yaml:8: AuthorizationPolicy default/p: spec.rules[0].to[0].operation.methods[0]: "
     '"get" must be an upper-case HTTP method, e.g. "GET"'),
    ("route-parent-missing", WEB_SVC + doc("""\
        kind: HTTPRoute
        metadata: {name: r, namespace: shop}
        spec:
          parentRefs: [{name: webb}]
        """),
     't.yaml:19: HTTPRoute shop/r: spec.parentRefs[0]: Service "webb" does not exist in '
     'namespace "shop"; did you mean "web"?'),
    ("route-parent-port-missing", WEB_SVC + doc("""\
        kind: HTTPRoute
        metadata: {name: r, namespace: shop}
        spec:
          parentRefs:
          - name: web
            port: 8080
        """),
     "t.yaml:21: HTTPRoute shop/r: spec.parentRefs[0].port: Service shop/web has no port "
     "8080; its ports are: 80 (http)"),
    ("route-backend-missing", WEB_SVC + doc("""\
        kind: HTTPRoute
        metadata: {name: r, namespace: shop}
        spec:
          parentRefs: [{name: web}]
          rules:
          - backendRefs:
            - {name: web-v2, port: 80}
        """),
     't.yaml:22: HTTPRoute shop/r: spec.rules[0].backendRefs[0]: Service "web-v2" does not '
     'exist in namespace "shop"; did you mean "web"?'),
    ("route-timeout-without-unit", doc("""\
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{name: web}]
          rules:
          - timeouts: {request: 10}
        """),
     "t.yaml:7: HTTPRoute default/r: spec.rules[0].timeouts.request: duration 10 has no unit; "
     'write e.g. "10s" or "10ms"'),
    ("route-retry-code", doc("""\
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{name: web}]
          rules:
          - retry:
              codes: [503, 200]
        """),
     "t.yaml:8: HTTPRoute default/r: spec.rules[0].retry.codes[1]: 200 is not an HTTP error "
     "status; use 400-599"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in CASES], ids=[i for i, _, _ in CASES]
)
def test_bad_input_gets_exact_message(text: str, expected: str) -> None:
    with pytest.raises(ResourceError) as caught:
        load_text(text, "t.yaml")
    assert str(caught.value) == expected
    assert len(caught.value.problems) == 1


def test_a_root_namespace_policy_selects_workloads_in_every_namespace() -> None:
    """Istio's root-namespace habit: the selector is matched mesh-wide, not in the root
    namespace only (which has no workloads)."""
    text = WEB + doc("""\
        kind: AuthorizationPolicy
        metadata: {name: mesh-wide, namespace: hybridmesh-system}
        spec:
          action: DENY
          selector: {matchLabels: {app: web}}
          rules: [{to: [{operation: {paths: ["/admin"]}}]}]
        """)
    (policy,) = load_text(text, "t.yaml").authorization_policies
    assert policy.metadata.namespace == "hybridmesh-system"


def test_every_problem_is_reported_sorted_by_line() -> None:
    text = doc("""\
        kind: Workload
        metadata: {name: web}
        spec:
          command: [srv]
          replicas: -1
          restartPolicy: always
        ---
        foo: [
        ---
        """) + doc("""\
        kind: Node
        metadata: {name: n}
        spec: {cpus: 2}
        """)
    with pytest.raises(ResourceError) as caught:
        load_text(text, "t.yaml")
    assert str(caught.value).splitlines() == [
        "t.yaml:6: Workload default/web: spec.replicas: must be at least 0, got -1",
        't.yaml:7: Workload default/web: spec.restartPolicy: "always" is not allowed; expected '
        'one of Always, OnFailure, Never; did you mean "Always"?',
        't.yaml:9: invalid YAML: a value is missing: a "[" or "{" is not closed, or a ":" or '
        '"-" has nothing after it',
        't.yaml:14: Node n: unknown field "cpus" in spec; remove it',
    ]


def test_problems_sort_by_file_then_line() -> None:
    from hybridmesh.resources import Problem

    error = ResourceError([Problem("b.yaml", 1, "x"), Problem("a.yaml", 9, "y"),
                           Problem("a.yaml", 10, "z")])
    assert str(error) == "a.yaml:9: y\na.yaml:10: z\nb.yaml:1: x"
