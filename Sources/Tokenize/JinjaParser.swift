import Foundation

// MARK: - Syntax tree

/// An expression with the position of its first (or operator) token.
struct JinjaExpr: Sendable {
    indirect enum Kind: Sendable {
        case literal(JinjaValue)
        case name(String)
        case list([JinjaExpr])
        /// Tuples are evaluated as lists (they only appear as loop/set targets in practice).
        case tuple([JinjaExpr])
        case dict([(JinjaExpr, JinjaExpr)])
        case attribute(JinjaExpr, String)
        case item(JinjaExpr, JinjaExpr)
        case slice(JinjaExpr?, JinjaExpr?, JinjaExpr?)
        case call(JinjaExpr, JinjaArgs)
        case filter(JinjaExpr, String, JinjaArgs)
        case test(JinjaExpr, String, JinjaArgs)
        /// `-`, `+`, `not`.
        case unary(String, JinjaExpr)
        /// `+ - * / // % **`, `and`, `or`.
        case binary(String, JinjaExpr, JinjaExpr)
        /// A chain `a < b <= c`; operators `== != < > <= >= in notin`.
        case compare(JinjaExpr, [(String, JinjaExpr)])
        /// `a ~ b ~ c`.
        case concat([JinjaExpr])
        /// `then if test else otherwise` (no `else`: Undefined).
        case conditional(test: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    }
    var kind: Kind
    var line: Int
    var column: Int
}

/// Call, filter and test arguments.
struct JinjaArgs: Sendable {
    var positional: [JinjaExpr] = []
    var keyword: [(String, JinjaExpr)] = []
}

/// What `for` and `set` assign to.
enum JinjaTarget: Sendable {
    case name(String)
    /// `ns.attr` (namespace attribute).
    case attribute(String, String)
    /// `a, b` (unpacks a sequence).
    case tuple([String])
}

/// A template statement.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case ifChain([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(target: JinjaTarget, iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    case set(JinjaTarget, JinjaExpr)
    /// `{% set name %}…{% endset %}`: the rendered body.
    case capture(String, [JinjaNode])
    case loopControl(isBreak: Bool)
    /// A body rendered in place (`{% generation %}`, transformers' assistant-mask extension).
    case block([JinjaNode])
}

// MARK: - Parser

/// A recursive-descent parser following jinja2 3.1's `Parser` (parser.py): the same operator
/// precedence (`or` < `and` < `not` < comparisons < `+ -` < `~` < `* / // %` < `**` < unary,
/// with filters and tests binding to the unary operand), the same tuple, subscript, slice and
/// call-argument rules, and `{% for %}`, `{% if %}`, `{% set %}` (incl. namespaces and block
/// set), `{% break %}` / `{% continue %}` (jinja2.ext.loopcontrols, which transformers enables)
/// and `{% generation %}`. Macros, `call`, `with`, `filter` blocks, includes and inheritance
/// are rejected with a clear error.
struct JinjaParser {
    private let tokens: [JinjaToken]
    private var i = 0
    /// Open blocks (tag, its line), for error messages, and how many of them are loops.
    private var open: [(tag: String, line: Int)] = []
    private var loopDepth = 0
    /// Expression nesting, bounded (like blocks) so that no input can exhaust the stack.
    private var depth = 0
    private static let maxDepth = 64

    static func parse(_ source: String) throws -> [JinjaNode] {
        var p = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        return try p.subparse(until: []).nodes
    }

    private init(tokens: [JinjaToken]) { self.tokens = tokens }

    // MARK: Token helpers

    private var current: JinjaToken { tokens[i] }
    private var lookahead: JinjaToken { tokens[min(i + 1, tokens.count - 1)] }
    @discardableResult private mutating func advance() -> JinjaToken {
        let t = tokens[i]
        if i < tokens.count - 1 { i += 1 }
        return t
    }

    private func fail(_ message: String, at token: JinjaToken? = nil) -> ChatTemplateError {
        let t = token ?? current
        return .syntax(line: t.line, column: t.column, message: message)
    }

    private func isOp(_ op: String) -> Bool { current.kind == .op(op) }
    private func isName(_ name: String) -> Bool { current.kind == .name(name) }

    private mutating func expect(_ kind: JinjaToken.Kind, _ what: String) throws {
        guard current.kind == kind else { throw fail("expected \(what), got \(current.description)") }
        advance()
    }

    private mutating func expectOp(_ op: String) throws { try expect(.op(op), "'\(op)'") }
    private mutating func expectBlockEnd() throws { try expect(.blockEnd, "'%}'") }

    private mutating func expectName() throws -> String {
        guard case let .name(n) = current.kind else { throw fail("expected a name, got \(current.description)") }
        advance()
        return n
    }

    private func expr(_ kind: JinjaExpr.Kind, _ token: JinjaToken) -> JinjaExpr {
        JinjaExpr(kind: kind, line: token.line, column: token.column)
    }

    // MARK: Statements

    /// Parses nodes until a `{% tag %}` whose name is in `endTags`; the current token is then
    /// that name (the caller consumes it).
    private mutating func subparse(until endTags: [String]) throws -> (nodes: [JinjaNode], end: String?) {
        var nodes: [JinjaNode] = []
        while true {
            let token = current
            switch token.kind {
            case let .data(s):
                advance()
                nodes.append(.text(s))
            case .variableBegin:
                advance()
                nodes.append(.output(try parseTuple()))
                try expect(.variableEnd, "'}}'")
            case .blockBegin:
                advance()
                guard case let .name(tag) = current.kind else { throw fail("expected a tag name after '{%', got \(current.description)") }
                if endTags.contains(tag) { return (nodes, tag) }
                nodes.append(try parseStatement(tag))
            case .eof:
                if let block = open.last {
                    throw fail("unexpected end of template: expected \(quoted(endTags)) to close the '\(block.tag)' tag of line \(block.line)")
                }
                return (nodes, nil)
            default:
                throw fail("unexpected \(token.description)")
            }
        }
    }

    private func quoted(_ tags: [String]) -> String { tags.map { "'\($0)'" }.joined(separator: " or ") }

    private mutating func parseStatement(_ tag: String) throws -> JinjaNode {
        let token = current
        switch tag {
        case "for": return try parseFor()
        case "if": return try parseIf()
        case "set": return try parseSet()
        case "break", "continue":
            guard loopDepth > 0 else { throw fail("'\(tag)' outside a for loop") }
            advance()
            try expectBlockEnd()
            return .loopControl(isBreak: tag == "break")
        case "generation":
            advance()
            try expectBlockEnd()
            let nodes = try body(of: "generation", line: token.line, until: ["endgeneration"]).nodes
            try expectBlockEnd()
            return .block(nodes)
        case "macro", "call", "filter", "with", "include", "import", "from", "extends", "block", "autoescape", "print", "do":
            throw fail("the '\(tag)' tag is not supported by this chat template interpreter")
        default:
            var message = "unknown tag '\(tag)'"
            if let block = open.last { message += " inside the '\(block.tag)' tag of line \(block.line)" }
            throw fail(message)
        }
    }

    /// The body of a block tag up to one of `endTags` (the end tag's name is consumed).
    private mutating func body(of tag: String, line: Int, until endTags: [String]) throws -> (nodes: [JinjaNode], end: String) {
        guard open.count < Self.maxDepth else { throw fail("blocks nested more than \(Self.maxDepth) deep") }
        open.append((tag, line))
        defer { open.removeLast() }
        let (nodes, end) = try subparse(until: endTags)
        advance()
        return (nodes, end!)
    }

    private mutating func parseFor() throws -> JinjaNode {
        let line = advance().line
        let target = try parseTarget(endNames: ["in"], namespace: false)
        try expect(.name("in"), "'in'")
        let iterable = try parseTuple(condexpr: false, endNames: ["recursive"])
        var filter: JinjaExpr? = nil
        if isName("if") {
            advance()
            filter = try parseExpression()
        }
        if isName("recursive") { throw fail("recursive for loops are not supported") }
        try expectBlockEnd()
        loopDepth += 1
        let (nodes, end) = try body(of: "for", line: line, until: ["endfor", "else"])
        loopDepth -= 1
        var otherwise: [JinjaNode] = []
        if end == "else" {
            try expectBlockEnd()
            otherwise = try body(of: "for", line: line, until: ["endfor"]).nodes
        }
        try expectBlockEnd()
        return .forLoop(target: target, iterable: iterable, filter: filter, body: nodes, otherwise: otherwise)
    }

    private mutating func parseIf() throws -> JinjaNode {
        let line = advance().line
        var branches: [(JinjaExpr, [JinjaNode])] = []
        var otherwise: [JinjaNode] = []
        while true {
            let test = try parseTuple(condexpr: false)
            try expectBlockEnd()
            let (nodes, end) = try body(of: "if", line: line, until: ["elif", "else", "endif"])
            branches.append((test, nodes))
            if end == "elif" { continue }
            if end == "else" {
                try expectBlockEnd()
                otherwise = try body(of: "if", line: line, until: ["endif"]).nodes
            }
            try expectBlockEnd()
            return .ifChain(branches, otherwise: otherwise)
        }
    }

    private mutating func parseSet() throws -> JinjaNode {
        let line = advance().line
        let target = try parseTarget(endNames: [], namespace: true)
        if isOp("=") {
            advance()
            let value = try parseTuple()
            try expectBlockEnd()
            return .set(target, value)
        }
        guard case let .name(name) = target else { throw fail("expected '=' after the target of 'set'") }
        if isOp("|") { throw fail("filtered block 'set' is not supported") }
        try expectBlockEnd()
        let nodes = try body(of: "set", line: line, until: ["endset"]).nodes
        try expectBlockEnd()
        return .capture(name, nodes)
    }

    /// A name, `ns.attr` (with `namespace`), or names separated by commas (optionally in
    /// parentheses), as jinja2's `parse_assign_target`.
    private mutating func parseTarget(endNames: [String], namespace: Bool) throws -> JinjaTarget {
        if namespace, case let .name(ns) = current.kind, lookahead.kind == .op(".") {
            advance()
            advance()
            return .attribute(ns, try expectName())
        }
        let parenthesized = isOp("(")
        if parenthesized { advance() }
        var names: [String] = []
        var isTuple = parenthesized
        while true {
            let token = current
            let name = try expectName()
            if ["true", "false", "none", "True", "False", "None"].contains(name) { throw fail("cannot assign to constant '\(name)'", at: token) }
            names.append(name)
            guard isOp(",") else { break }
            advance()
            isTuple = true
            if isTupleEnd(endNames) || isOp(")") { break }
        }
        if parenthesized { try expectOp(")") }
        return isTuple ? .tuple(names) : .name(names[0])
    }

    // MARK: Expressions

    private func isTupleEnd(_ endNames: [String]) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .op(")"): return true
        case let .name(n): return endNames.contains(n)
        default: return false
        }
    }

    /// Expressions separated by commas: one expression, or a tuple when there is a comma.
    private mutating func parseTuple(condexpr: Bool = true, endNames: [String] = [], parenthesized: Bool = false) throws -> JinjaExpr {
        let start = current
        var items: [JinjaExpr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(endNames) { break }
            items.append(try parseExpression(condexpr: condexpr))
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let first = items.first { return first }
            if !parenthesized { throw fail("expected an expression, got \(current.description)") }
        }
        return expr(.tuple(items), start)
    }

    /// Runs a parse step one nesting level deeper.
    private mutating func nested<T>(_ step: (inout JinjaParser) throws -> T) throws -> T {
        guard depth < Self.maxDepth else { throw fail("expression nested more than \(Self.maxDepth) deep") }
        depth += 1
        defer { depth -= 1 }
        return try step(&self)
    }

    private mutating func parseExpression(condexpr: Bool = true) throws -> JinjaExpr {
        try nested { try $0.parseConditional(condexpr: condexpr) }
    }

    private mutating func parseConditional(condexpr: Bool) throws -> JinjaExpr {
        guard condexpr else { return try parseOr() }
        var e = try parseOr()
        while isName("if") {
            let token = advance()
            let test = try parseOr()
            var otherwise: JinjaExpr? = nil
            if isName("else") {
                advance()
                otherwise = try parseExpression()
            }
            e = expr(.conditional(test: test, then: e, otherwise: otherwise), token)
        }
        return e
    }

    /// A left-associative binary level: `next` operands joined by any of `ops` (operators or
    /// keywords).
    private mutating func binaryLevel(_ ops: [String], keyword: Bool = false,
                                      _ next: (inout JinjaParser) throws -> JinjaExpr) throws -> JinjaExpr {
        var left = try next(&self)
        while let op = ops.first(where: { keyword ? isName($0) : isOp($0) }) {
            let token = advance()
            left = expr(.binary(op, left, try next(&self)), token)
        }
        return left
    }

    private mutating func parseOr() throws -> JinjaExpr { try binaryLevel(["or"], keyword: true) { try $0.parseAnd() } }
    private mutating func parseAnd() throws -> JinjaExpr { try binaryLevel(["and"], keyword: true) { try $0.parseNot() } }

    private mutating func parseNot() throws -> JinjaExpr {
        if isName("not") {
            let token = advance()
            return expr(.unary("not", try nested { try $0.parseNot() }), token)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        let start = current
        let left = try parseMath1()
        var ops: [(String, JinjaExpr)] = []
        while true {
            if case let .op(o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                advance()
                ops.append((o, try parseMath1()))
            } else if isName("in") {
                advance()
                ops.append(("in", try parseMath1()))
            } else if isName("not"), lookahead.kind == .name("in") {
                advance()
                advance()
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : expr(.compare(left, ops), start)
    }

    private mutating func parseMath1() throws -> JinjaExpr { try binaryLevel(["+", "-"]) { try $0.parseConcat() } }

    private mutating func parseConcat() throws -> JinjaExpr {
        let start = current
        var parts = [try parseMath2()]
        while isOp("~") {
            advance()
            parts.append(try parseMath2())
        }
        return parts.count == 1 ? parts[0] : expr(.concat(parts), start)
    }

    private mutating func parseMath2() throws -> JinjaExpr { try binaryLevel(["*", "/", "//", "%"]) { try $0.parsePow() } }
    private mutating func parsePow() throws -> JinjaExpr { try binaryLevel(["**"]) { try $0.parseUnary() } }

    private mutating func parseUnary(filters: Bool = true) throws -> JinjaExpr {
        var node: JinjaExpr
        if isOp("-") || isOp("+") {
            let token = advance()
            guard case let .op(o) = token.kind else { preconditionFailure() }
            node = expr(.unary(o, try nested { try $0.parseUnary(filters: false) }), token)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        return filters ? try parseFilterExpr(node) : node
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let token = current
        switch token.kind {
        case let .name(n):
            advance()
            switch n {
            case "true", "True": return expr(.literal(.bool(true)), token)
            case "false", "False": return expr(.literal(.bool(false)), token)
            case "none", "None": return expr(.literal(.none), token)
            default: return expr(.name(n), token)
            }
        case .string:
            var s = ""
            while case let .string(part) = current.kind {
                s += part
                advance()
            }
            return expr(.literal(.string(s)), token)
        case let .int(v):
            advance()
            return expr(.literal(.int(v)), token)
        case let .float(v):
            advance()
            return expr(.literal(.double(v)), token)
        case .op("("):
            advance()
            let e = try parseTuple(parenthesized: true)
            try expectOp(")")
            return e
        case .op("["):
            advance()
            var items: [JinjaExpr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            advance()
            return expr(.list(items), token)
        case .op("{"):
            advance()
            var items: [(JinjaExpr, JinjaExpr)] = []
            while !isOp("}") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("}") { break }
                let key = try parseExpression()
                try expectOp(":")
                items.append((key, try parseExpression()))
            }
            advance()
            return expr(.dict(items), token)
        default:
            throw fail("unexpected \(token.description)")
        }
    }

    private mutating func parsePostfix(_ node: JinjaExpr) throws -> JinjaExpr {
        var node = node
        while true {
            // Postfix nodes take the position of the expression they apply to.
            let token = JinjaToken(kind: current.kind, line: node.line, column: node.column)
            if isOp(".") {
                advance()
                switch current.kind {
                case let .name(n): node = expr(.attribute(node, n), token)
                case let .int(k): node = expr(.item(node, expr(.literal(.int(k)), current)), token)
                default: throw fail("expected a name or number after '.', got \(current.description)")
                }
                advance()
            } else if isOp("[") {
                advance()
                var args: [JinjaExpr] = []
                while !isOp("]") {
                    if !args.isEmpty { try expectOp(",") }
                    args.append(try parseSubscribed())
                }
                advance()
                node = expr(.item(node, args.count == 1 ? args[0] : expr(.tuple(args), token)), token)
            } else if isOp("(") {
                node = expr(.call(node, try parseArgs()), token)
            } else {
                return node
            }
        }
    }

    /// One subscript: an expression or a slice `a:b:c` with any part omitted.
    private mutating func parseSubscribed() throws -> JinjaExpr {
        let start = current
        var parts: [JinjaExpr?] = []
        if isOp(":") {
            advance()
            parts = [nil]
        } else {
            let e = try parseExpression()
            guard isOp(":") else { return e }
            advance()
            parts = [e]
        }
        func part(_ p: inout JinjaParser) throws -> JinjaExpr? {
            p.isOp("]") || p.isOp(",") || p.isOp(":") ? nil : try p.parseExpression()
        }
        parts.append(try part(&self))
        if isOp(":") {
            advance()
            parts.append(try part(&self))
        } else {
            parts.append(nil)
        }
        return expr(.slice(parts[0], parts[1], parts[2]), start)
    }

    /// `( positional…, name=value… )` with an optional trailing comma.
    private mutating func parseArgs() throws -> JinjaArgs {
        try expectOp("(")
        var args = JinjaArgs()
        while !isOp(")") {
            if !args.positional.isEmpty || !args.keyword.isEmpty {
                try expectOp(",")
                if isOp(")") { break }
            }
            if isOp("*") || isOp("**") { throw fail("*args and **kwargs in calls are not supported") }
            if case let .name(n) = current.kind, lookahead.kind == .op("=") {
                advance()
                advance()
                args.keyword.append((n, try parseExpression()))
            } else {
                if !args.keyword.isEmpty { throw fail("a positional argument follows a keyword argument") }
                args.positional.append(try parseExpression())
            }
        }
        advance()
        return args
    }

    private mutating func parseFilterExpr(_ node: JinjaExpr) throws -> JinjaExpr {
        var node = node
        while true {
            if isOp("|") {
                advance()
                let token = current
                let name = try dottedName()
                let args = isOp("(") ? try parseArgs() : JinjaArgs()
                node = expr(.filter(node, name, args), token)
            } else if isName("is") {
                advance()
                var negated = false
                if isName("not") {
                    advance()
                    negated = true
                }
                let token = current
                let name = try dottedName()
                var args = JinjaArgs()
                if isOp("(") {
                    args = try parseArgs()
                } else if !isName("else") && !isName("or") && !isName("and") {
                    switch current.kind {
                    case .name, .string, .int, .float, .op("["), .op("{"):
                        if isName("is") { throw fail("you cannot chain multiple tests with 'is'") }
                        args.positional = [try parsePostfix(try parsePrimary())]
                    default: break
                    }
                }
                node = expr(.test(node, name, args), token)
                if negated { node = expr(.unary("not", node), token) }
            } else if isOp("(") {
                node = expr(.call(node, try parseArgs()), current)
            } else {
                return node
            }
        }
    }

    private mutating func dottedName() throws -> String {
        var name = try expectName()
        while isOp(".") {
            advance()
            name += "." + (try expectName())
        }
        return name
    }
}
