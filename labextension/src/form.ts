import { el } from './dom';
import { APIError, post } from './request';
import { describePartition, partitionName } from './format';
import { IClusterOptions, ITrans, LaunchField, LaunchValues, plainTrans } from './tokens';

/** The fields a launch sends, in the order the form shows them. */
const FIELDS: LaunchField[] = [
  'cpus',
  'mem',
  'time',
  'partition',
  'gpus',
  'account',
  'qos',
  'workdir'
];
const BASIC: LaunchField[] = ['cpus', 'mem', 'time'];
let formCount = 0; // unique ids for aria-describedby
const LAST = '\u0000last'; // the preset select's "same as last time"

/**
 * A cluster's launch form: CPUs, memory and time at once; partition, GPUs (where the partition
 * has them), account, QOS, folder and presets under "More options". Its rules are the server's:
 * every change is checked with check-launch (the same checks a launch makes, nothing
 * submitted), so the form and the server never disagree.
 */
export class LaunchForm {
  readonly node: HTMLFormElement;

  constructor(
    readonly hpc: string,
    defaults: Record<'cpus' | 'mem' | 'time', string>,
    options: IClusterOptions | null,
    last: LaunchValues | null,
    private readonly _changed: (problem: string | null) => void,
    submit: () => void,
    private readonly _trans: ITrans = plainTrans
  ) {
    this._last = last;
    this._options = options;
    this.node = el('form', 'jp-HPCPanel-form');
    this.node.onsubmit = event => {
      event.preventDefault();
      submit();
    };
    const basic = el('div', 'jp-HPCPanel-basic');
    this.node.appendChild(basic);
    const trans = this._trans;
    this._input(basic, 'cpus', trans.__('CPUs'), defaults.cpus);
    this._input(basic, 'mem', trans.__('Memory'), defaults.mem, '', trans.__('e.g. 40G'));
    this._input(basic, 'time', trans.__('Time'), defaults.time, '', trans.__('HH:MM:SS'));

    this._more = el('details', 'jp-HPCPanel-more');
    this._more.appendChild(el('summary', '', trans.__('More options')));
    this.node.appendChild(this._more);
    this._buildMore();
    this._problem = el('p', 'jp-HPCPanel-formError');
    // Read out when it changes; a refused field points at it (aria-describedby).
    this._problem.setAttribute('role', 'alert');
    this._problem.id = `jp-HPCPanel-problem-${hpc.replace(/[^\w-]/g, '_')}-${++formCount}`;
    this.node.appendChild(this._problem);
    const hidden = el('button');
    hidden.type = 'submit';
    hidden.hidden = true;
    this.node.appendChild(hidden);
    this._showGpus();
  }

  /** The launch body: every field with a value. */
  values(): LaunchValues {
    const values: LaunchValues = {};
    for (const name of FIELDS) {
      const value = this._fields.get(name)?.value.trim();
      if (value) {
        values[name] = value;
      }
    }
    return values;
  }

  /** What the cluster offers (partitions, accounts, QOS, presets) as the form knows it. */
  get options(): IClusterOptions | null {
    return this._options;
  }

  /**
   * What the cluster offers has come in (or changed): "More options" is made anew in place,
   * with what the user chose or typed there kept. The basic fields are not touched, and a
   * field the user is in is never replaced under them: the change waits until they leave it.
   */
  setOptions(options: IClusterOptions | null): void {
    this._options = options;
    const focused = document.activeElement;
    const inside = [...this._fields.entries()].find(
      ([name, input]) => input === focused && !BASIC.includes(name)
    );
    const preset = this._more.querySelector('select[name=preset]');
    if (inside || (preset && preset === focused)) {
      const field = (inside ? inside[1] : preset) as HTMLElement;
      if (!this._waiting) {
        this._waiting = true;
        field.addEventListener(
          'blur',
          () => {
            this._waiting = false;
            this.setOptions(this._options);
          },
          { once: true }
        );
      }
      return;
    }
    const kept = this.values();
    for (const name of FIELDS) {
      if (!BASIC.includes(name)) {
        this._fields.delete(name);
      }
    }
    Array.from(this._more.children).forEach(child => {
      if (child.tagName !== 'SUMMARY') {
        child.remove();
      }
    });
    this._buildMore();
    for (const [name, value] of Object.entries(kept)) {
      const field = this._fields.get(name as LaunchField);
      if (field && !BASIC.includes(name as LaunchField) && value !== undefined) {
        field.value = value;
        if (field.value !== value && field instanceof HTMLSelectElement) {
          field.value = ''; // no longer offered: the cluster's default
        }
      }
    }
    this._showGpus();
    this.changed();
  }

  /** The last launch that ran ("same as last time" in the presets). */
  setLast(last: LaunchValues | null): void {
    if (JSON.stringify(last) !== JSON.stringify(this._last)) {
      this._last = last;
      this.setOptions(this._options);
    }
  }

  /** While a launch, stop or login runs, the fields wait (what they hold is kept). */
  setDisabled(disabled: boolean): void {
    this.node
      .querySelectorAll<HTMLInputElement | HTMLSelectElement>('input, select')
      .forEach(input => {
        if (input.disabled !== disabled) {
          input.disabled = disabled;
        }
      });
  }

  /** Put values in the form (a preset, or the last launch), then check them. */
  fill(values: LaunchValues): void {
    for (const [name, value] of Object.entries(values)) {
      const field = this._fields.get(name as LaunchField);
      if (field && value !== undefined) {
        field.value = value;
      }
    }
    this._showGpus();
    this.changed();
  }

  /** The problem the server finds with the form now (null: none). */
  async check(): Promise<string | null> {
    const body = { hpc: this.hpc, ...this.values() };
    const key = JSON.stringify(body);
    if (key === this._checkedKey) {
      return this._checked;
    }
    let problem: string | null = null;
    let field: string | null = null;
    try {
      await post('check-launch', body);
    } catch (error) {
      if (error instanceof APIError && error.response.status === 400) {
        problem = error.message;
        field = error.details.field ?? null;
      }
      // Anything else (the cluster is unreachable, a login is needed): launch will say.
    }
    if (key === JSON.stringify({ hpc: this.hpc, ...this.values() })) {
      this._checkedKey = key;
      this._checked = problem;
      this._show(problem, field);
    }
    return problem;
  }

  /** Something changed: check it after a short pause (typing goes on). */
  changed(): void {
    window.clearTimeout(this._timer);
    this._timer = window.setTimeout(() => void this.check(), 250);
  }

  dispose(): void {
    window.clearTimeout(this._timer);
  }

  private _show(problem: string | null, field: string | null): void {
    this._problem.textContent = problem ?? '';
    for (const [name, input] of this._fields) {
      if (problem !== null && name === field) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', this._problem.id);
      } else {
        input.removeAttribute('aria-invalid');
        input.removeAttribute('aria-describedby');
      }
    }
    if (field && field !== 'cpus' && field !== 'mem' && field !== 'time') {
      (this.node.querySelector('.jp-HPCPanel-more') as HTMLDetailsElement).open = true;
    }
    this._changed(problem);
  }

  /** "More options": presets, partition (with its limits), GPUs, account, QOS, folder. */
  private _buildMore(): void {
    const more = this._more;
    const options = this._options;
    const trans = this._trans;
    this._presets(more);
    const partitions = options?.partitions;
    if (partitions) {
      const choices: [string, string][] = [['', trans.__('default')]];
      for (const p of partitions) {
        choices.push([p.name, partitionName(p, trans)]);
      }
      this._select(
        more,
        'partition',
        trans.__('Partition'),
        choices,
        options?.defaultPartition ?? ''
      );
      for (const option of Array.from(
        (this._fields.get('partition') as HTMLSelectElement).options
      )) {
        const p = partitions.find(x => x.name === option.value);
        option.title = p ? describePartition(p, trans) : '';
      }
      const limits = el('p', 'jp-HPCPanel-limits');
      limits.id = `${this._problem?.id ?? 'jp-HPCPanel'}-limits-${++formCount}`;
      limits.setAttribute('aria-live', 'polite');
      this._fields.get('partition')!.setAttribute('aria-describedby', limits.id);
      more.appendChild(limits);
    } else {
      this._input(more, 'partition', trans.__('Partition'), options?.defaultPartition ?? '');
    }
    this._input(more, 'gpus', trans.__('GPUs'), '', trans.__('e.g. 1 or tesla:1'));
    this._choice(more, 'account', trans.__('Account'), options?.accounts, options?.defaultAccount);
    this._choice(more, 'qos', trans.__('QOS'), options?.qos, options?.defaultQos);
    this._input(more, 'workdir', trans.__('Folder'), '', trans.__('~ (your home)'));
  }

  private _label(parent: HTMLElement, name: LaunchField, label: string): HTMLLabelElement {
    const wrap = el('label', `jp-HPCPanel-field jp-HPCPanel-field-${name}`);
    wrap.appendChild(el('span', '', label));
    parent.appendChild(wrap);
    return wrap;
  }

  private _input(
    parent: HTMLElement,
    name: LaunchField,
    label: string,
    value: string,
    placeholder = '',
    hint = ''
  ): void {
    const input = el('input', 'jp-mod-styled');
    input.name = name;
    input.value = value;
    input.placeholder = placeholder;
    input.title = hint;
    input.oninput = () => this.changed();
    this._label(parent, name, label).appendChild(input);
    this._fields.set(name, input);
  }

  private _select(
    parent: HTMLElement,
    name: LaunchField,
    label: string,
    choices: [string, string][],
    value: string
  ): void {
    const select = selectOf(name, choices);
    select.value = value;
    select.onchange = () => {
      this._showGpus();
      this.changed();
    };
    this._label(parent, name, label).appendChild(select);
    this._fields.set(name, select);
  }

  /** A select where the cluster lists the choices (accounts, QOS), else a text field. */
  private _choice(
    parent: HTMLElement,
    name: LaunchField,
    label: string,
    choices: string[] | null | undefined,
    value: string | null | undefined
  ): void {
    if (choices && choices.length) {
      this._select(
        parent,
        name,
        label,
        [['', this._trans.__('default')], ...choices.map(c => [c, c] as [string, string])],
        value ?? ''
      );
    } else {
      this._input(parent, name, label, value ?? '');
    }
  }

  private _presets(parent: HTMLElement): void {
    const presets = this._options?.presets ?? {};
    const names = Object.keys(presets);
    if (!names.length && !this._last) {
      return;
    }
    const wrap = el('label', 'jp-HPCPanel-field jp-HPCPanel-field-preset');
    wrap.appendChild(el('span', '', this._trans.__('Preset')));
    const select = selectOf('preset', [
      ['', '—'],
      ...(this._last ? [[LAST, this._trans.__('Same as last time')] as [string, string]] : []),
      ...names.map(n => [n, n] as [string, string])
    ]);
    select.onchange = () => {
      const chosen = select.value === LAST ? this._last : presets[select.value];
      if (chosen) {
        this.fill(chosen as LaunchValues);
      }
    };
    wrap.appendChild(select);
    parent.appendChild(wrap);
  }

  /** GPUs only where the chosen partition has them (or where partitions are not known); the
   * chosen partition's limits under its select. */
  private _showGpus(): void {
    const gpus = this._fields.get('gpus');
    const partitions = this._options?.partitions;
    if (!gpus || !partitions) {
      return;
    }
    const chosen = this._fields.get('partition')?.value || this._options?.defaultPartition;
    const p = partitions.find(x => (chosen ? x.name === chosen : x.default));
    const limits = this.node.querySelector('.jp-HPCPanel-limits');
    if (limits) {
      limits.textContent = p ? describePartition(p, this._trans) : '';
    }
    const has = !!p && Object.keys(p.gpus).length > 0;
    // (style, not the hidden attribute: the field's own CSS sets display)
    (gpus.parentElement as HTMLElement).style.display = has ? '' : 'none';
    if (!has) {
      gpus.value = '';
    }
  }

  private _options: IClusterOptions | null;
  private _last: LaunchValues | null;
  private _more: HTMLDetailsElement;
  private _waiting = false;
  private _fields = new Map<LaunchField, HTMLInputElement | HTMLSelectElement>();
  private _problem: HTMLElement;
  private _timer = 0;
  private _checkedKey = '';
  private _checked: string | null = null;
}

/** A select named ``name`` with these (value, text) choices. */
function selectOf(name: string, choices: [string, string][]): HTMLSelectElement {
  const select = el('select', 'jp-mod-styled');
  select.name = name;
  for (const [value, text] of choices) {
    const option = el('option', '', text);
    option.value = value;
    select.appendChild(option);
  }
  return select;
}
