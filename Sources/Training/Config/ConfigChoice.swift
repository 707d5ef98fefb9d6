import Adapters
import Foundation

/// A configuration value chosen from a fixed set of names (`--adapter-type lora`,
/// `schedule: cosine`). It is Codable as its raw string, so `run.json`, checkpoints and
/// `--config` files keep the names they always had; names match case-insensitively with `_`
/// and `-` interchangeable; an unknown name is an error naming the flag or field and the valid
/// names.
public protocol ConfigChoice: RawRepresentable, CaseIterable, Codable, Sendable where RawValue == String {}

public extension ConfigChoice {
    /// The valid names, e.g. `lora or ndlinear`.
    static var validNames: String {
        let names = allCases.map(\.rawValue)
        return names.count < 2 ? names.joined() : names.dropLast().joined(separator: ", ") + " or " + names.last!
    }

    /// The value called `name`, or nil.
    static func named(_ name: String) -> Self? {
        Self(rawValue: name) ?? Self(rawValue: name.lowercased().replacingOccurrences(of: "_", with: "-"))
    }

    /// The value called `name`, or an error naming `flag` and the valid names (bad input).
    init(_ name: String, flag: String) throws {
        guard let v = Self.named(name) else { throw TrainingError.invalidOption("\(flag) '\(name)': expected \(Self.validNames)") }
        self = v
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        let name = try container.decode(String.self)
        let field = decoder.codingPath.last?.stringValue ?? "\(Self.self)"
        guard let v = Self.named(name) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "\(field) '\(name)': expected \(Self.validNames)")
        }
        self = v
    }
}

// The adapter enums live in Adapters, which does not depend on this protocol; their names are
// their raw values there too.
extension AdapterKind: ConfigChoice {}
extension NdLinearInit: ConfigChoice {}
extension LRScheduleKind: ConfigChoice {}
extension PromptTemplate: ConfigChoice {}
