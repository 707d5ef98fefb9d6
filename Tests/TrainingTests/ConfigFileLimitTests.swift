import Foundation
import Testing
import TestSupport
@testable import Training

/// Issue 20, class 5: `--config` reads a small mapping of flags; a YAML alias bomb, an
/// oversized file or a directory are refused at once, naming the file (and the key and line).
@Suite struct ConfigFileLimitTests {
    /// A "billion laughs" document: 9 levels of 9 aliases expand to 9^9 ≈ 387M strings.
    static let bomb = """
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]

        """

    @Test func aliasBombIsRefusedAtOnceNamingTheKeyAndLine() throws {
        let dir = try temporaryDirectory("yaml-bomb")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bomb.yaml")
        try Self.bomb.write(to: file, atomically: true, encoding: .utf8)
        #expect { try ConfigFile.arguments(fromFile: file.path) } throws: { e in
            let m = "\(e)"
            return m.hasPrefix("--config \(file.path): 'e' (line 5) expands to more than 10000 values") && m.contains("aliases")
        }
    }

    @Test func aliasesWithinTheLimitStillWork() throws {
        let args = try ConfigFile.arguments(fromText: """
            modules: &m [q_proj, v_proj]
            target_modules: *m
            lr: 0.5
            packing: true
            no_shuffle: false
            """, path: "ok.yaml")
        #expect(args == ["--lr", "0.5", "--modules", "q_proj,v_proj", "--packing", "--target-modules", "q_proj,v_proj"])
    }

    @Test func oversizedFilesDirectoriesAndNestedListsAreRefused() throws {
        let dir = try temporaryDirectory("yaml-size")
        defer { try? FileManager.default.removeItem(at: dir) }
        let big = dir.appendingPathComponent("big.yaml")
        try ("a: \"" + String(repeating: "x", count: ConfigFile.maxBytes) + "\"\n").write(to: big, atomically: true, encoding: .utf8)
        #expect { try ConfigFile.arguments(fromFile: big.path) } throws: { e in
            "\(e)".hasPrefix("--config \(big.path): \(ConfigFile.maxBytes + 6) bytes; a run configuration is a small mapping")
        }
        #expect { try ConfigFile.arguments(fromFile: dir.path) } throws: { e in
            "\(e)" == "--config \(dir.path): cannot read the file: it is a directory; expected a YAML or JSON file"
        }
        #expect { try ConfigFile.arguments(fromText: "lr: 1\ntarget_modules: [[q_proj], v_proj]\n", path: "n.yaml") } throws: { e in
            "\(e)" == "--config n.yaml: 'target_modules' (line 2) must be a scalar or a list of scalars"
        }
    }

    /// Found by fuzz-yaml-config (docs/RELIABILITY.md): a key that is a list, a mapping or an
    /// alias crashed Yams' constructor (a nil unwrap); it is refused naming the line.
    @Test func nonScalarKeysAreRefusedNotCrashed() throws {
        let cases = [
            (#"{"model": "m", ["q_proj", "v_proj"], !seed&: null}"#, "a key (line 1) is a list"),
            ("lr: 1\n[a, b]: 2\n", "a key (line 2) is a list"),
            ("lr: 1\nnested:\n  ? {x: 1}\n  : 2\n", "a key (line 3) is a mapping"),
        ]
        for (text, message) in cases {
            #expect { try ConfigFile.arguments(fromText: text, path: "k.yaml") } throws: { e in
                "\(e)" == "--config k.yaml: \(message); expected flag names (plain scalars) as keys"
            }
        }
    }

    /// The repository's run configurations expand as before.
    @Test func repositoryConfigsExpand() throws {
        let configs = TestPaths.repoRoot.appendingPathComponent("configs")
        let names = try FileManager.default.contentsOfDirectory(atPath: configs.path).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".json") }
        #expect(!names.isEmpty)
        for n in names {
            let args = try ConfigFile.arguments(fromFile: configs.appendingPathComponent(n).path)
            #expect(args.contains { $0.hasPrefix("--") } && !args.contains { $0.contains("[") || $0.contains("{") }, "\(n): \(args)")
        }
    }
}
