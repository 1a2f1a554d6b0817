// Checks a filter (docs/filters.md) or a rule as the admin types, before the server sees it.
// Returns the first problem as "path: message", or "" when the shape is right; the server
// still has the last word (its errors are shown at the same field).

const PATH = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,15}$/;
const AUTH_KEYS = new Set(["@auth", "@auth.id", "@auth.email", "@auth.role", "@auth.verified"]);
const VARIABLES = new Set(["@auth.id", "@auth.email", "@auth.role", "@auth.verified", "@now"]);
const COMPARE = new Set(["$gt", "$gte", "$lt", "$lte"]);
const LISTS = new Set(["$in", "$nin", "$all"]);
const OPERATORS = new Set(["$eq", "$ne", ...COMPARE, ...LISTS, "$exists", "$regex", "$options",
  "$size", "$elemMatch", "$not"]);

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** Parse `text` as JSON: {value} or {error: "message"}. */
export function parseJson(text) {
  try {
    return { value: JSON.parse(text) };
  } catch (error) {
    return { error: `Not valid JSON: ${error.message}` };
  }
}

/** The first problem of `filter` ("" if none); `rule` allows @auth… and @body… variables. */
export function filterProblem(filter, { rule = false, body = true } = {}) {
  if (!isObject(filter)) return "a filter must be a JSON object";
  try {
    checkFilter(filter, "", { rule, body }, 0);
    return "";
  } catch (problem) {
    return problem;
  }
}

/** The first problem of a rule: null, true or a filter with variables. */
export function ruleProblem(rule, { body = true } = {}) {
  if (rule === null || rule === true) return "";
  if (rule === false) return "false is not a rule: use null (secret key only)";
  return filterProblem(rule, { rule: true, body });
}

function fail(where, message) {
  throw where ? `${where}: ${message}` : message;
}

function join(where, key) {
  return where ? `${where}.${key}` : key;
}

function checkFilter(filter, where, options, depth) {
  if (depth > 16) fail(where, "nested deeper than 16 levels");
  for (const [key, value] of Object.entries(filter)) {
    const at = join(where, key);
    if (key === "$and" || key === "$or" || key === "$nor") {
      if (!Array.isArray(value) || !value.length) fail(at, "must be a non-empty list of filters");
      value.forEach((item, i) => {
        if (!isObject(item)) fail(`${at}.${i}`, "must be a filter object");
        checkFilter(item, `${at}.${i}`, options, depth + 2);
      });
    } else if (key.startsWith("$")) {
      fail(at, `unknown operator (fields cannot start with $)`);
    } else if (key.startsWith("@")) {
      if (!options.rule || !AUTH_KEYS.has(key)) fail(at, "only rules may test @auth, @auth.id, @auth.email, @auth.role, @auth.verified");
      checkCondition(value, at, options, depth + 1);
    } else {
      if (!PATH.test(key)) fail(at, "a field path is letters, digits, _ and - in up to 16 dotted segments");
      checkCondition(value, at, options, depth + 1);
    }
  }
}

function checkCondition(value, where, options, depth) {
  if (isObject(value) && Object.keys(value).some((k) => k.startsWith("$"))) {
    checkOperators(value, where, options, depth);
  } else {
    checkValue(value, where, options);
  }
}

function checkValue(value, where, options) {
  if (typeof value === "string" && options.rule && value.startsWith("@")) {
    const isBody = /^@body\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(value);
    if (isBody && !options.body) fail(where, "@body may appear only in create and update rules");
    if (!isBody && !VARIABLES.has(value)) fail(where, `${value} is not a variable (@auth.id, @auth.email, @auth.role, @auth.verified, @now, @body.FIELD)`);
  } else if (typeof value === "number" && !Number.isFinite(value)) {
    fail(where, "numbers must be finite");
  } else if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (k.startsWith("$")) fail(join(where, k), "object literals cannot have $ keys");
      checkLiteral(v, join(where, k));
    }
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => checkLiteral(v, `${where}.${i}`));
  }
}

function checkLiteral(value, where) {
  if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (k.startsWith("$")) fail(join(where, k), "object literals cannot have $ keys");
      checkLiteral(v, join(where, k));
    }
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => checkLiteral(v, `${where}.${i}`));
  }
}

function checkOperators(ops, where, options, depth) {
  for (const [op, operand] of Object.entries(ops)) {
    const at = join(where, op);
    if (!OPERATORS.has(op)) fail(at, op.startsWith("$") ? "unknown operator" : "cannot mix operators and fields");
    if (op === "$eq" || op === "$ne") checkValue(operand, at, options);
    else if (COMPARE.has(op)) {
      const kind = typeof operand;
      if (!["number", "string", "boolean"].includes(kind)) fail(at, "compares with a number, a string or a boolean");
      checkValue(operand, at, options);
    } else if (LISTS.has(op)) {
      if (!Array.isArray(operand)) fail(at, "must be a list");
      if (operand.length > 1000) fail(at, "takes at most 1000 values");
      operand.forEach((v, i) => checkValue(v, `${at}.${i}`, options));
    } else if (op === "$exists" && typeof operand !== "boolean") fail(at, "must be true or false");
    else if (op === "$regex" && typeof operand !== "string") fail(at, "must be a string (RE2 syntax)");
    else if (op === "$regex" && operand.length > 512) fail(at, "is longer than 512 characters");
    else if (op === "$options" && (operand !== "i" && operand !== "")) fail(at, 'may only be "i"');
    else if (op === "$options" && !("$regex" in ops)) fail(at, "goes with $regex");
    else if (op === "$size" && !(Number.isInteger(operand) && operand >= 0)) fail(at, "must be a whole number ≥ 0");
    else if (op === "$elemMatch") {
      if (!isObject(operand)) fail(at, "must be an object");
      if (Object.keys(operand).some((k) => k.startsWith("$") && !["$and", "$or", "$nor"].includes(k))) {
        checkOperators(operand, at, options, depth + 1);
      } else {
        checkFilter(operand, at, options, depth + 1);
      }
    } else if (op === "$not") {
      if (!isObject(operand) || !Object.keys(operand).length) fail(at, "must be an object of operators");
      checkOperators(operand, at, options, depth + 1);
    }
  }
}
